"""reproduce.py: one table over several seeds of the pipeline (`make reproduce` writes the reports).

The claims of SELF-JUDGE (Lee et al., ACL 2024, §4: on-policy self-judgment beats its start, SFT and
offline DPO) are comparisons between arms on the same held-out prompts. One run is one draw: this
script pools the runs of `evaluate.py` over seeds and answers "would a second run give the same
ordering?". Per arm and comparison (vs the baseline, vs the arm's own start):
  mean and spread   the win rate of each seed, their mean, min and max;
  pooled interval   per prompt the outcome averaged over seeds, then a paired bootstrap over prompts
                    (seeds share the held-out prompts, so the pairing holds): how sure the mean is
                    for these trained checkpoints, not over a retraining;
  seed interval     the per-seed figures' mean by Student's t with seeds - 1 degrees of freedom:
                    each seed one draw of the whole training, so it counts the training noise a
                    second run would bring (wide with 3 seeds, as it should be);
  ordering          the arms ranked by sampled verifier score, per seed, whether the seeds
                    agree, and for each pair of arms in how many seeds the one above is above
                    (the orders every seed agrees on are what a second run would likely repeat).
  head to head      SELF-JUDGE against each other preference arm: per prompt the difference of their
                    outcomes vs the baseline, averaged over seeds, with its paired bootstrap
                    interval (the three-arm question:
                    offline DPO / on-policy with a reward model / SELF-JUDGE);
  cost              parameters held while training and the median seconds per step, per arm.
Also pooled: the judges' accuracy on on-policy pairs (the JSFT judge and the reward model), the
share of verifier ties, each stage's movement (KL to start, changed replies), the self-rejection
curve (its gain over N = 1 pooled per prompt like a win rate).

    python reproduce.py out/reproduce/seed*/eval/report.json  # -> out/reproduce/table.md, .json
"""

import argparse
import functools
import json
import math
import os
import statistics
import sys

from benchmarks import mean
from evaluate import bootstrap_interval
from readers import atomic_write
from report import diff_cell, family_table, md_table, win_cell


def read_reports(paths):
    reports = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                reports.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(
                f"{path}: cannot read an evaluate.py report ({e}); run `make reproduce`"
            )
    for key in ("prompt_ids", "rejection_prompt_ids"):  # the pairing across seeds needs them equal
        ids = [r.get(key) for r in reports]
        if any(x != ids[0] for x in ids):
            other = next(p for p, x in zip(paths, ids) if x != ids[0])
            raise SystemExit(
                f"{other}: its {key} differ from {paths[0]}'s: pooling needs the same held-out "
                "prompts, in the same order, in every seed (the same tasks.py world, and the same "
                "evaluate.py --max-tasks / --rejection-prompts)"
            )
    return reports


@functools.cache
def t_quantile(p, df):
    """Student's t quantile for p in (0.5, 1): bisection on its CDF, the density integrated by
    Simpson's rule from 0 (the t distribution is symmetric). t_quantile(0.975, 2) = 4.303."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x, n=2000):
        h = x / n
        ys = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return 0.5 + h / 3 * (ys[0] + ys[-1] + 4 * sum(ys[1:-1:2]) + 2 * sum(ys[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def seed_interval(values, level=0.95):
    """[lo, hi]: the mean of the per-seed figures +- t * sd / sqrt(k) (k seeds, sd with k - 1),
    each seed an independent training run; None below 2 seeds."""
    k = len(values)
    if k < 2:
        return None
    m = mean(values)
    half = t_quantile((1 + level) / 2, k - 1) * statistics.stdev(values) / math.sqrt(k)
    return [m - half, m + half]


def pooled_win(rows, seed=0):
    """rows: one paired_win dict per seed (with "outcomes") -> per-seed rates and the pooled
    interval."""
    lengths = {len(r["outcomes"]) for r in rows}
    if len(lengths) != 1:
        raise SystemExit(
            f"the reports judged different numbers of prompts ({sorted(lengths)}): "
            "pooling needs the same held-out prompts in every seed"
        )
    per_prompt = [mean(o) for o in zip(*(r["outcomes"] for r in rows))]
    ci = bootstrap_interval(per_prompt, seed)
    rates = [r["win_rate"] for r in rows]
    return {
        "win_rate": mean(per_prompt),
        "ci": ci,
        "per_seed": rates,
        "seed_ci": seed_interval(rates),
        "min": min(rates),
        "max": max(rates),
        "significant": ci[0] > 0.5 or ci[1] < 0.5,
        "n_prompts": len(per_prompt),
        "n_seeds": len(rows),
    }


def head_to_head(reports, a, b, seed=0):
    """a against b on the same prompts: per prompt (outcome of a - outcome of b) vs the baseline,
    averaged over seeds; > 0 favours a. The interval is a paired bootstrap over prompts."""
    rows = [
        (
            r["win_rates"]["sampled"].get(a, {}).get("vs_baseline"),
            r["win_rates"]["sampled"].get(b, {}).get("vs_baseline"),
        )
        for r in reports
    ]
    if not all(x and y for x, y in rows):
        return None
    diffs = [
        mean(d)
        for d in zip(*([p - q for p, q in zip(x["outcomes"], y["outcomes"])] for x, y in rows))
    ]
    ci = bootstrap_interval(diffs, seed)
    per_seed = [x["win_rate"] - y["win_rate"] for x, y in rows]
    return {
        "diff": mean(diffs),
        "ci": ci,
        "significant": ci[0] > 0 or ci[1] < 0,
        "n_prompts": len(diffs),
        "per_seed": per_seed,
        "seed_ci": seed_interval(per_seed),
    }


def pooled_curve(curves, seed=0):
    """The seeds' self-rejection curves: per N each figure's mean over seeds, and the gain over N=1
    pooled like a win rate (per prompt the gain averaged over seeds, a paired bootstrap over
    prompts). None unless every seed has a curve of the same Ns."""
    if not all(curves) or len({tuple(r["n"] for r in c) for c in curves}) != 1:
        return None
    pooled = []
    for rows in zip(*curves):
        row = {
            k: mean(r[k] for r in rows)
            for k in rows[0]
            if all(isinstance(r.get(k), (int, float)) for r in rows)
        } | {"n": rows[0]["n"]}
        if all("per_prompt" in r for r in rows) and all("per_prompt" in c[0] for c in curves):
            gains = [
                [a - b for a, b in zip(r["per_prompt"], c[0]["per_prompt"])]
                for r, c in zip(rows, curves)
            ]
            if len({len(g) for g in gains}) != 1:
                raise SystemExit(
                    "the reports' self-rejection curves cover different numbers of "
                    "prompts: pooling needs the same prompts in every seed"
                )
            per_prompt = [mean(g) for g in zip(*gains)]
            per_seed = [mean(g) for g in gains]
            row.update(
                gain_vs_1=mean(per_prompt),
                gain_per_seed=per_seed,
                gain_vs_1_ci=bootstrap_interval(per_prompt, seed),
                gain_seed_ci=seed_interval(per_seed),
            )
        pooled.append(row)
    return pooled


def pooled_by_family(onpolicy_rows):
    """The judge on the on-policy pairs that differ in correctness, by task family, pooled over
    the seeds: pairs summed, figures weighted by each seed's pairs (and the other judges' accuracy
    on the same pairs, where every seed with such pairs has it); beside them the policy's sampled
    correct share, mean over the seeds that sampled the family."""
    if any(not o or "sampled_correct_by_family" not in o for o in onpolicy_rows):
        return {}  # a seed without the split (an older report): nothing pooled

    def weighted(blocks, key):
        n = sum(b["n"] for b in blocks)
        return sum(b[key] * b["n"] for b in blocks) / n

    fams = [o.get("correctness_by_family") or {} for o in onpolicy_rows]  # {} for no such pairs
    names = {n for o in onpolicy_rows for n in o.get("others") or {}}
    out = {}
    for f in {f for x in fams for f in x}:
        blocks = [x[f] for x in fams if f in x]
        shares = [x[f] for o in onpolicy_rows if f in (x := o["sampled_correct_by_family"])]
        out[f] = {
            "n": sum(b["n"] for b in blocks),
            "sampled_correct": mean(shares),
            **{k: weighted(blocks, k) for k in ("acc", "consistency", "names_first")},
        }
        for name in sorted(names):
            theirs = [
                ((o.get("others") or {}).get(name) or {}).get("correctness_by_family", {}).get(f)
                for o, x in zip(onpolicy_rows, fams)
                if f in x
            ]
            if all(theirs):
                out[f][f"{name}_acc"] = weighted(theirs, "acc")
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["n"], kv[0])))  # ties: by name


def pool(reports):
    arms = [a for a in reports[0]["checkpoints"] if all(a in r["checkpoints"] for r in reports)]
    table = {}
    for arm in arms:
        sampled = [r["tasks"].get(arm, {}).get("sampled", {}).get("overall") for r in reports]
        row = {"sampled_overall": sampled, "start": reports[0]["checkpoints"][arm].get("start")}
        for key in ("vs_baseline", "vs_start"):
            rows = [r["win_rates"]["sampled"].get(arm, {}).get(key) for r in reports]
            if all(rows):
                row[key] = pooled_win(rows)
        moves = [r["movement"].get(arm) for r in reports]
        if all(moves):
            row["log_ratio"] = mean(m["log_ratio"] for m in moves)
            row["changed_greedy"] = mean(m["changed_greedy"] for m in moves)
        costs = [r["checkpoints"][arm] for r in reports]
        for key in ("params_held", "step_s"):
            if all(c.get(key) is not None for c in costs):
                row[key] = mean(c[key] for c in costs)
        table[arm] = row
    ranked = [
        sorted(
            (a for a in arms if table[a]["sampled_overall"][i] is not None),
            key=lambda a: -table[a]["sampled_overall"][i],
        )
        for i in range(len(reports))
    ]
    # each pair of arms scored in some seed, the one above in more seeds first: [the seeds where it
    # is strictly above, the seeds where both are scored]; an order holds when it is above in all
    above = {}
    for i, a in enumerate(arms):
        for b in arms[i + 1 :]:
            both = [
                (x, y)
                for x, y in zip(table[a]["sampled_overall"], table[b]["sampled_overall"])
                if x is not None and y is not None
            ]
            k, k_b = sum(x > y for x, y in both), sum(y > x for x, y in both)
            if both:
                above[f"{a} > {b}" if k >= k_b else f"{b} > {a}"] = [max(k, k_b), len(both)]
    onpolicy_rows = [r.get("onpolicy_judge") for r in reports]
    keys = (
        "tie_share",
        "identical_share",
        "acc",
        "consistency",
        "acc_first_order",
        "acc_second_order",
        "names_first",
    )
    onpolicy = {
        k: mean(o[k] for o in onpolicy_rows)
        for k in keys
        if all(o and o.get(k) is not None for o in onpolicy_rows)
    }
    for kind in ("correctness", "surface"):  # what the judge can and cannot tell apart
        blocks = [((o or {}).get("by_difference") or {}).get(kind) for o in onpolicy_rows]
        if all(b and b.get("acc") is not None for b in blocks):
            for k in ("acc", "consistency", "names_first"):
                onpolicy[f"{kind}_{k}"] = mean(b[k] for b in blocks)
    # the other judges of the same pairs (the reward model, the policy's own likelihood)
    others = [((o or {}).get("others") or {}) for o in onpolicy_rows]
    for name in others[0]:
        if all(name in x for x in others):
            onpolicy[f"{name}_acc"] = mean(x[name]["acc"] for x in others)
            blocks = [x[name].get("by_difference", {}).get("correctness") for x in others]
            if all(blocks):
                onpolicy[f"{name}_correctness_acc"] = mean(b["acc"] for b in blocks)
    by_family = pooled_by_family(onpolicy_rows)
    heldout = {
        j: mean(r["judge"][j]["acc"] for r in reports)
        for j in reports[0].get("judge", {})
        if all(j in r.get("judge", {}) for r in reports)
    }
    rejection = pooled_curve([(r.get("rejection") or {}).get("curve") for r in reports])
    h2h = {
        other: head_to_head(reports, "self_judge", other)
        for other in ("dpo", "onpolicy_rm", "oracle")
        if "self_judge" in arms and other in arms
    }
    return {
        "arms": table,
        "orderings": ranked,
        "pairwise": above,
        "same_ordering": all(r == ranked[0] for r in ranked),
        "onpolicy_judge": onpolicy,
        "onpolicy_by_family": by_family,
        "heldout_judge_acc": heldout,
        "rejection": rejection,
        "head_to_head": {k: v for k, v in h2h.items() if v},
        "baseline": reports[0]["win_rates"]["baseline"],
        "n_seeds": len(reports),
    }


def seeds_cell(values, ci, null):
    """'0.553 / 0.604 / 0.584 [0.516, 0.644] *': each seed's figure, then their seed interval, *
    when it excludes null (0.5 for a win rate; 0 for a difference, written with its sign)."""
    f = "{:+.3f}" if null == 0 else "{:.3f}"
    cell = " / ".join(f.format(x) for x in values)
    if ci is None:
        return cell
    star = " *" if ci[0] > null or ci[1] < null else ""
    return cell + f" [{f.format(ci[0])}, {f.format(ci[1])}]" + star


def to_markdown(pooled):
    def spread(xs):
        xs = [x for x in xs if x is not None]
        return f"{mean(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs else "-"

    def seeds(win):
        return seeds_cell(win["per_seed"], win["seed_ci"], 0.5) if win else "-"

    def cost(row):
        held, step = row.get("params_held"), row.get("step_s")
        return (f"{held / 1e6:.1f}M" if held else "-"), step

    rows = [
        [
            arm,
            row["start"] or "-",
            spread(row["sampled_overall"]),
            win_cell(row.get("vs_baseline")),
            seeds(row.get("vs_baseline")),
            win_cell(row.get("vs_start")),
            seeds(row.get("vs_start")),
            row.get("log_ratio"),
            row.get("changed_greedy"),
            *cost(row),
        ]
        for arm, row in pooled["arms"].items()
    ]
    pairs, n_seeds = pooled["pairwise"], pooled["n_seeds"]
    split = [
        f"{p} in {k} of {n_seeds}" + (f" (both scored in {n})" if n < n_seeds else "")
        for p, (k, n) in pairs.items()
        if k < n_seeds
    ]
    out = [
        f"# minihcx: {pooled['n_seeds']} seeds pooled",
        "",
        md_table(
            [
                "arm",
                "start",
                "sampled overall: mean (min-max)",
                f"win vs {pooled['baseline']} pooled [95% CI]",
                "per seed [95% t]",
                "win vs start pooled [95% CI]",
                "per seed [95% t]",
                "KL to start",
                "changed greedy",
                "params held",
                "s / step",
            ],
            rows,
        ),
        "",
        "Pooled: per held-out prompt the outcome averaged over seeds, then a paired "
        "bootstrap over prompts: the trained checkpoints held fixed. Per seed [95% t]: each "
        "seed's figure, then their mean's interval by Student's t over seeds, which counts the "
        "training noise a second run would bring. * marks an interval that excludes 0.5 "
        "(0 for a difference).",
        "",
        "Ordering by sampled verifier score, per "
        "seed: " + "; ".join(" > ".join(r) for r in pooled["orderings"]),
        "Would a second run give the same ordering? "
        f"{'yes' if pooled['same_ordering'] else 'no'}: the {pooled['n_seeds']} seeds "
        f"{'agree' if pooled['same_ordering'] else 'disagree'} on the full ranking. "
        f"Pairwise they agree on {len(pairs) - len(split)} of {len(pairs)} orders"
        + ("; split: " + ", ".join(split) if split else "")
        + ".",
        "",
    ]
    if pooled.get("head_to_head"):
        out += [
            "SELF-JUDGE head to head (per prompt: its outcome vs the baseline minus the other "
            "arm's, mean over seeds; > 0 favours SELF-JUDGE; * when the interval excludes "
            "0):",
            "",
            md_table(
                ["self_judge vs", "difference [95% CI]", "per seed [95% t]"],
                [
                    [
                        arm,
                        diff_cell(h["diff"], h["ci"]),
                        seeds_cell(h["per_seed"], h["seed_ci"], 0),
                    ]
                    for arm, h in pooled["head_to_head"].items()
                ],
            ),
            "",
        ]
    if pooled["onpolicy_judge"]:
        out += [
            "On-policy pairs of the SELF-JUDGE start (mean over seeds): "
            + ", ".join(f"{k} {v:.3f}" for k, v in pooled["onpolicy_judge"].items()),
            "",
        ]
    if pooled.get("onpolicy_by_family"):
        fams = pooled["onpolicy_by_family"]
        out += [
            "Its pairs that differ in correctness, by task family (pooled over seeds; the "
            "policy's sampled correct share in the family beside them):",
            "",
            family_table(fams),
            "",
        ]
    if pooled.get("heldout_judge_acc"):
        out += [
            "Judge accuracy on held-out preference pairs (mean over seeds): "
            + ", ".join(f"{k} {v:.3f}" for k, v in pooled["heldout_judge_acc"].items()),
            "",
        ]
    if pooled.get("rejection"):
        curve = pooled["rejection"]
        gain_keys = ("n", "gain_vs_1", "gain_vs_1_ci", "gain_per_seed", "gain_seed_ci")
        keys = [k for k in curve[0] if k not in gain_keys]
        gain = "gain_vs_1_ci" in curve[0]
        out += [
            "Self-rejection curve (mean over seeds; every sample counts at every N; the gain "
            "over N=1 pooled per prompt, * when its interval excludes 0):",
            "",
            md_table(
                ["N"] + (["gain over N=1 [95% CI]", "per seed [95% t]"] if gain else []) + keys,
                [
                    [c["n"]]
                    + (
                        [
                            diff_cell(c["gain_vs_1"], c["gain_vs_1_ci"]),
                            seeds_cell(c["gain_per_seed"], c["gain_seed_ci"], 0),
                        ]
                        if gain
                        else []
                    )
                    + [c.get(k) for k in keys]
                    for c in curve
                ],
            ),
            "",
        ]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "reports", nargs="+", help="report.json files written by evaluate.py, one per seed"
    )
    parser.add_argument(
        "--out-dir", default="out/reproduce", help="where table.md and table.json go"
    )
    args = parser.parse_args(argv)
    pooled = pool(read_reports(args.reports))
    pooled["reports"] = args.reports
    os.makedirs(args.out_dir, exist_ok=True)
    text = to_markdown(pooled)
    atomic_write(os.path.join(args.out_dir, "table.json"), json.dumps(pooled, indent=1))
    atomic_write(os.path.join(args.out_dir, "table.md"), text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
