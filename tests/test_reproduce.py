"""reproduce.py: pooling seeds by hand-computed per-prompt means, the ordering question, clear
errors."""

import json

import pytest

import reproduce as R


def report(outcomes_vs_sft, outcomes_vs_start, overall):
    """A minimal evaluate.py report: arms sft (the baseline), dpo (from sft) and self_judge (from
    jsft)."""

    def win(o):
        return {"win_rate": sum(o) / len(o), "outcomes": o}

    return {
        "checkpoints": {
            "sft": {"start": None},
            "jsft": {"start": "sft"},
            "self_judge": {"start": "jsft"},
        },
        "tasks": {n: {"sampled": {"overall": v}} for n, v in overall.items()},
        "win_rates": {
            "baseline": "sft",
            "sampled": {
                "sft": {},
                "jsft": {"vs_baseline": win(outcomes_vs_sft), "vs_start": win(outcomes_vs_sft)},
                "self_judge": {
                    "vs_baseline": win(outcomes_vs_sft),
                    "vs_start": win(outcomes_vs_start),
                },
            },
        },
        "movement": {
            "jsft": {"log_ratio": 0.2, "changed_greedy": 0.1},
            "self_judge": {"log_ratio": 0.4, "changed_greedy": 0.3},
        },
        "onpolicy_judge": {
            "tie_share": 0.5,
            "acc": 0.8,
            "consistency": 0.9,
            "names_first": 0.5,
            "by_difference": {"correctness": {"acc": 0.6, "consistency": 0.2, "names_first": 0.3}},
        },
    }


def test_pool_averages_each_prompt_over_seeds_then_bootstraps():
    a = report(
        [1.0, 0.5, 1.0, 1.0] * 25, [1.0] * 100, {"sft": 0.5, "jsft": 0.55, "self_judge": 0.6}
    )
    b = report(
        [0.0, 0.5, 1.0, 1.0] * 25, [0.5] * 100, {"sft": 0.5, "jsft": 0.62, "self_judge": 0.6}
    )
    pooled = R.pool([a, b])
    sj = pooled["arms"]["self_judge"]
    # per prompt mean over seeds
    assert sj["vs_baseline"]["win_rate"] == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    assert sj["vs_baseline"]["per_seed"] == [pytest.approx(0.875), pytest.approx(0.625)]
    # and over seeds: 0.75 +- 12.706 * sd / sqrt(2), sd = 0.125 * sqrt(2)
    assert sj["vs_baseline"]["seed_ci"] == pytest.approx([0.75 - 1.5883, 0.75 + 1.5883], abs=1e-4)
    # constant per prompt
    assert sj["vs_start"]["win_rate"] == 0.75 and sj["vs_start"]["ci"] == [0.75, 0.75]
    assert (
        sj["vs_start"]["significant"] and sj["vs_start"]["n_seeds"] == 2 and sj["log_ratio"] == 0.4
    )
    assert pooled["orderings"] == [["self_judge", "jsft", "sft"], ["jsft", "self_judge", "sft"]]
    assert not pooled["same_ordering"]
    # per pair: the arm above in more seeds first (a tie: the earlier arm), [seeds, of seeds]
    assert pooled["pairwise"] == {
        "jsft > sft": [2, 2],
        "self_judge > sft": [2, 2],
        "jsft > self_judge": [1, 2],
    }
    assert pooled["onpolicy_judge"]["acc"] == 0.8
    b["onpolicy_judge"]["by_difference"]["correctness"]["names_first"] = 0.1
    pooled = R.pool([a, b])  # the per-kind figures pooled too, where every seed has them
    assert pooled["onpolicy_judge"]["correctness_names_first"] == pytest.approx(0.2)
    assert pooled["onpolicy_judge"]["correctness_consistency"] == 0.2
    assert "surface_acc" not in pooled["onpolicy_judge"]
    # other judges of the same pairs: pooled where every seed has them
    correct = lambda acc: {"correctness": {"acc": acc}, "surface": {"acc": 0.1}}
    a["onpolicy_judge"]["others"] = {
        "likelihood": {"acc": 0.7, "by_difference": correct(0.9)},
        "reward_model": {"acc": 0.6},
    }
    b["onpolicy_judge"]["others"] = {"likelihood": {"acc": 0.5, "by_difference": correct(0.8)}}
    op = R.pool([a, b])["onpolicy_judge"]
    assert op["likelihood_acc"] == pytest.approx(0.6)
    assert op["likelihood_correctness_acc"] == pytest.approx(0.85)
    assert "reward_model_acc" not in op
    text = R.to_markdown(pooled)
    assert "Would a second run give the same ordering? no" in text
    assert "0.875 / 0.625 [-0.838, 2.338] |" in text
    assert pooled["onpolicy_by_family"] == {}  # no seed has it
    assert "agree on 2 of 3 orders; split: jsft > self_judge in 1 of 2." in text
    assert R.pool([a, a])["same_ordering"]
    assert "agree on 3 of 3 orders." in R.to_markdown(R.pool([a, a]))
    # an arm not scored in a seed, and a tie, hold no order there
    c = report([1.0] * 100, [1.0] * 100, {"sft": 0.5, "self_judge": 0.5})
    mixed = R.pool([a, c])
    assert mixed["pairwise"] == {
        "jsft > sft": [1, 1],
        "self_judge > sft": [1, 2],
        "self_judge > jsft": [1, 1],
    }
    assert (
        "agree on 0 of 3 orders; split: jsft > sft in 1 of 2 (both scored in 1), "
        "self_judge > sft in 1 of 2, self_judge > jsft in 1 of 2 (both scored in 1)."
        in R.to_markdown(mixed)
    )
    assert R.pool([c, c])["pairwise"] == {"sft > self_judge": [0, 2]}  # a tie in every seed


def test_pooling_refuses_reports_over_different_prompts(tmp_path):
    a = report([1.0] * 10, [1.0] * 10, {"sft": 0.5, "jsft": 0.5, "self_judge": 0.5})
    b = report([1.0] * 12, [1.0] * 12, {"sft": 0.5, "jsft": 0.5, "self_judge": 0.5})
    with pytest.raises(SystemExit, match="same held-out prompts"):
        R.pool([a, b])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match="bad.json"):
        R.read_reports([str(tmp_path / "bad.json")])
    # as many prompts, but other ones (or in another order): refused by name, before pooling
    paths = []
    for k, ids in enumerate([["a-0", "b-0"], ["a-0", "b-0"], ["b-0", "a-0"]]):
        paths.append(str(tmp_path / f"seed{k}.json"))
        with open(paths[-1], "w") as fh:
            json.dump(dict(a, prompt_ids=ids, rejection_prompt_ids=["a-0"]), fh)
    assert len(R.read_reports(paths[:2])) == 2
    with pytest.raises(SystemExit, match="seed2.json: its prompt_ids differ from .*seed0.json"):
        R.read_reports(paths)
    with open(paths[1], "w") as fh:
        json.dump(dict(a, prompt_ids=["a-0", "b-0"], rejection_prompt_ids=["b-0"]), fh)
    with pytest.raises(SystemExit, match="seed1.json: its rejection_prompt_ids differ"):
        R.read_reports(paths[:2])


def test_cli_writes_the_table(tmp_path, capsys):
    paths = []
    for k in range(3):
        path = tmp_path / f"r{k}.json"
        path.write_text(
            json.dumps(
                report(
                    [1.0, 0.0] * 20, [1.0, 0.5] * 20, {"sft": 0.5, "jsft": 0.6, "self_judge": 0.7}
                )
            )
        )
        paths.append(str(path))
    R.main(paths + ["--out-dir", str(tmp_path / "out")])
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    assert table["same_ordering"] and table["arms"]["self_judge"]["vs_start"]["win_rate"] == 0.75
    assert "| self_judge | jsft |" in (tmp_path / "out" / "table.md").read_text()
    assert "3 seeds pooled" in capsys.readouterr().out


def test_head_to_head_is_the_per_prompt_difference_of_outcomes():
    a = report([1.0, 0.5, 0.0, 1.0] * 10, [1.0] * 40, {"sft": 0.5, "jsft": 0.5, "self_judge": 0.6})
    b = report([0.5, 0.5, 0.0, 1.0] * 10, [1.0] * 40, {"sft": 0.5, "jsft": 0.5, "self_judge": 0.6})
    for r, rm in ((a, [0.0, 0.5, 0.0, 1.0] * 10), (b, [0.5, 0.0, 0.0, 1.0] * 10)):
        r["checkpoints"]["onpolicy_rm"] = {"start": "jsft", "params_held": 30, "step_s": 2.0}
        r["tasks"]["onpolicy_rm"] = {"sampled": {"overall": 0.55}}
        r["win_rates"]["sampled"]["onpolicy_rm"] = {
            "vs_baseline": {"win_rate": sum(rm) / 40, "outcomes": rm}
        }
    h = R.head_to_head([a, b], "self_judge", "onpolicy_rm")
    # per prompt, mean over seeds of (self_judge - onpolicy_rm): (1 + 0)/2, (0 + .5)/2, 0, 0
    assert h["diff"] == pytest.approx((0.5 + 0.25) / 4) and h["n_prompts"] == 40
    assert h["per_seed"] == [pytest.approx(0.625 - 0.375), pytest.approx(0.5 - 0.375)]
    pooled = R.pool([a, b])
    assert pooled["head_to_head"]["onpolicy_rm"]["diff"] == h["diff"]
    assert (
        pooled["arms"]["onpolicy_rm"]["params_held"] == 30
        and "params_held" not in pooled["arms"]["sft"]
    )
    assert "| onpolicy_rm | +0.188" in R.to_markdown(pooled)
    # over seeds: 0.1875 +- 12.706 * sd([0.25, 0.125]) / sqrt(2) = 12.706 * 0.0625
    assert h["seed_ci"] == pytest.approx([0.1875 - 0.7941, 0.1875 + 0.7941], abs=1e-4)
    back = R.head_to_head([a, b], "onpolicy_rm", "self_judge")  # the other way round: negated
    assert back["seed_ci"] == pytest.approx([-0.1875 - 0.7941, -0.1875 + 0.7941], abs=1e-4)
    assert "+0.250 / +0.125 [-0.607, +0.982] |" in R.to_markdown(pooled)


def test_t_quantile_matches_the_printed_t_table():
    # two-sided 95 % (p = 0.975) and one-sided 95 % critical values from any t table
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042)):
        assert R.t_quantile(0.975, df) == pytest.approx(t, abs=1e-3)
    assert R.t_quantile(0.95, 5) == pytest.approx(2.015, abs=1e-3)
    assert R.t_quantile(0.975, 100_000) == pytest.approx(1.960, abs=1e-3)  # the normal's


def test_seed_interval_is_students_t_over_the_seeds():
    # mean 2, sd 1, three seeds: 2 +- 4.303 / sqrt(3)
    assert R.seed_interval([1.0, 2.0, 3.0]) == pytest.approx([2 - 2.4843, 2 + 2.4843], abs=1e-3)
    assert R.seed_interval([0.6, 0.6, 0.6, 0.6]) == pytest.approx([0.6, 0.6])  # no spread
    assert R.seed_interval([0.7]) is None  # one seed: no training noise can be read
    assert R.seeds_cell([0.7], None, 0.5) == "0.700"
    assert R.seeds_cell([0.55, 0.6], [0.51, 0.64], 0.5) == "0.550 / 0.600 [0.510, 0.640] *"
    assert R.seeds_cell([0.02, -0.01], [-0.1, 0.1], 0) == "+0.020 / -0.010 [-0.100, +0.100]"


def test_rejection_gain_is_pooled_per_prompt_over_seeds():
    def curve(one, two):
        return {
            "curve": [
                {
                    "n": 1,
                    "overall": sum(one) / 2,
                    "per_prompt": one,
                    "gain_vs_1": 0.0,
                    "gain_vs_1_ci": [0.0, 0.0],
                },
                {"n": 2, "overall": sum(two) / 2, "per_prompt": two},
            ]
        }

    a = report([1.0] * 4, [1.0] * 4, {"sft": 0.5, "jsft": 0.5, "self_judge": 0.6})
    b = json.loads(json.dumps(a))
    a["rejection"], b["rejection"] = curve([0.4, 0.5], [0.6, 0.5]), curve([0.4, 0.3], [0.4, 0.7])
    rows = R.pool([a, b])["rejection"]
    # gains per prompt: seed a 0.2, 0; seed b 0, 0.4 -> mean over seeds 0.1, 0.2
    assert rows[1]["gain_vs_1"] == pytest.approx(0.15)
    assert rows[1]["gain_per_seed"] == pytest.approx([0.1, 0.2])
    assert rows[1]["gain_vs_1_ci"] == pytest.approx([0.1, 0.2])
    assert rows[1]["overall"] == pytest.approx(0.55) and "per_prompt" not in rows[1]
    # the seed interval: 0.15 +- t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.05
    assert rows[1]["gain_seed_ci"] == pytest.approx([0.15 - 0.6353, 0.15 + 0.6353], abs=1e-4)
    text = R.to_markdown(R.pool([a, b]))
    assert "| 2 | +0.150 [+0.100, +0.200] * | +0.100 / +0.200 [-0.485, +0.785] |" in text
    b["rejection"]["curve"][1]["per_prompt"] = [0.4]
    with pytest.raises(SystemExit, match="different numbers of prompts"):
        R.pool([a, b])
    del b["rejection"]
    assert R.pool([a, b])["rejection"] is None  # a seed without a curve: no pooled curve


def test_correctness_pairs_by_family_pool_weighted_by_pairs():
    def seed(fams, correct, lk):
        def block(n, acc, cons):
            return {"n": n, "acc": acc, "consistency": cons, "names_first": 0.5}

        blocks = {f: block(*v) for f, v in fams.items()}
        return {
            "correctness_by_family": blocks,
            "sampled_correct_by_family": correct,
            "others": {
                "likelihood": {
                    "correctness_by_family": {f: {"acc": lk, "n": v[0]} for f, v in fams.items()}
                }
            },
        }

    a = seed(
        {"count": (4, 0.5, 0.25), "refusal": (2, 0.0, 1.0)}, {"count": 0.3, "refusal": 0.7}, 1.0
    )
    b = seed({"count": (2, 1.0, 1.0)}, {"count": 0.2, "refusal": 0.9}, 0.25)
    fams = R.pooled_by_family([a, b])
    assert list(fams) == ["count", "refusal"]  # most pairs first
    count = fams["count"]
    assert count["n"] == 6 and count["sampled_correct"] == pytest.approx(0.25)
    assert count["acc"] == pytest.approx((4 * 0.5 + 2 * 1.0) / 6)
    assert count["consistency"] == pytest.approx((4 * 0.25 + 2 * 1.0) / 6)
    assert count["likelihood_acc"] == pytest.approx((4 * 1.0 + 2 * 0.25) / 6)
    assert fams["refusal"]["n"] == 2 and fams["refusal"]["sampled_correct"] == pytest.approx(0.8)
    assert R.pooled_by_family([a, None]) == {}  # a seed without it pools nothing
    tie = seed({"sort": (2, 1.0, 1.0), "arith": (2, 0.0, 0.0)}, {"sort": 0.1, "arith": 0.1}, 0.5)
    assert list(R.pooled_by_family([tie])) == ["arith", "sort"]  # as many pairs: by name
    # a seed with no correctness pairs still counts its sampled share; a judge one seed lacks
    # loses its column only where a seed with such pairs lacks it
    none = {"correctness_by_family": {}, "sampled_correct_by_family": {"count": 0.1}}
    alone = R.pooled_by_family([a, none])
    assert alone["count"]["n"] == 4 and alone["count"]["acc"] == 0.5
    assert alone["count"]["likelihood_acc"] == 1.0  # only seed a had count pairs
    assert alone["count"]["sampled_correct"] == pytest.approx(0.2)
    assert alone["refusal"]["sampled_correct"] == pytest.approx(0.7)  # none sampled no refusals
    blind = dict(b, others={})
    assert "likelihood_acc" not in R.pooled_by_family([a, blind])["count"]
    assert R.pooled_by_family([a, blind])["refusal"]["likelihood_acc"] == 1.0  # no such pairs in b
    pooled = {
        "arms": {},
        "orderings": [],
        "pairwise": {},
        "same_ordering": True,
        "onpolicy_judge": {},
        "onpolicy_by_family": fams,
        "heldout_judge_acc": {},
        "rejection": None,
        "head_to_head": {},
        "baseline": "sft",
        "n_seeds": 2,
    }
    text = R.to_markdown(pooled)
    assert "| count | 0.250 | 6 | 0.667 | 0.500 | 0.500 | 0.750 |" in text, text
