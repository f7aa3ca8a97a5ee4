"""tasks.py: the verifier against hand-computed values, every gold on top and every planted flaw
lower on the principle it breaks, disjoint and deterministic splits, and exports that load through
the project's real readers."""

import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

import tasks
from readers import read_hh_rlhf, read_messages_jsonl, read_preferences, read_prompts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORLD = tasks.build_world(seed=0)
SMALL = tasks.WorldConfig(n_train=12, n_eval=4)

# What each flaw is meant to break, written here independently of tasks.FLAW_BREAKS.
BREAKS = {
    **dict.fromkeys(("wrong_value", "partly_right", "over_refusal", "complies"), "correctness"),
    **dict.fromkeys(("verbose", "repeated"), "concision"),
    "wrong_language": "language",
    "cut_off": "ending",
}
BENIGN_FLAWS = ["wrong_value", "wrong_language", "verbose", "repeated", "cut_off", "over_refusal"]
EXPECTED_FLAWS = {
    f: BENIGN_FLAWS
    for f in (
        "arith",
        "arith_words",
        "to_words",
        "from_words",
        "translate",
        "count",
        "compare",
        "capital",
        "followup",
    )
}
EXPECTED_FLAWS["sort"] = BENIGN_FLAWS + ["partly_right"]
EXPECTED_FLAWS["refusal"] = ["complies", "wrong_language", "verbose", "repeated", "cut_off"]
FAMILY_FLAWS = [(fam, flaw) for fam, flaws in EXPECTED_FLAWS.items() for flaw in flaws]


def tasks_of(family, n_train=40):
    return [t for t in WORLD["eval"] if t["family"] == family] + [
        t for t in WORLD["train"] if t["family"] == family
    ][:n_train]


# ----------------------------------------------------------------------------- hand-computed values
@pytest.mark.parametrize(
    "n, en, ko",
    [
        (0, "zero", "영"),
        (7, "seven", "칠"),
        (10, "ten", "십"),
        (13, "thirteen", "십삼"),
        (40, "forty", "사십"),
        (47, "forty-seven", "사십칠"),
        (100, "one hundred", "백"),
        (110, "one hundred ten", "백십"),
        (215, "two hundred fifteen", "이백십오"),
        (1000, "one thousand", "천"),
        (2005, "two thousand five", "이천오"),
        (9999, "nine thousand nine hundred ninety-nine", "구천구백구십구"),
    ],
)
def test_number_words(n, en, ko):
    assert tasks.en_number(n) == en and tasks.ko_number(n) == ko


@pytest.mark.parametrize(
    "word, pair, expected",
    [
        (45, "은/는", "45는"),
        (47, "은/는", "47은"),
        (42, "과/와", "42와"),
        (37, "과/와", "37과"),
        (3, "을/를", "3을"),
        (10, "을/를", "10을"),
        (2, "을/를", "2를"),
        ("'사과'", "을/를", "'사과'를"),
        ("'곰'", "은/는", "'곰'은"),
    ],
)
def test_josa_follows_the_final_sound(word, pair, expected):
    assert tasks.josa(word, pair) == expected


def test_josa_refuses_words_it_cannot_read():
    with pytest.raises(ValueError, match="final sound"):
        tasks.josa("'apple'", "을/를")


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 9999), st.integers(0, 9999))
def test_number_mentions_read_back_digits_and_words_in_both_languages(a, b):
    mentions = lambda text: [(v, form) for _, v, form in tasks.number_mentions(text)]
    assert (
        mentions(f"{a} plus {b} is {tasks.en_number(a + b) if a + b < 10000 else a + b}.")[-1][0]
        == a + b
    )
    assert mentions(f"The answer is {tasks.en_number(a).capitalize()}.") == [(a, "words")]
    assert mentions(
        f"{tasks.ko_number(a)} 더하기 {tasks.josa(tasks.ko_number(b), '은/는')} 답입니다."
    ) == [(a, "words"), (b, "words")]
    assert mentions(f"답은 {tasks.ko_number(a)}이에요.") == [(a, "words")]
    assert mentions(f"답은 {tasks.ko_number(a)}입니다. 도움이 되었으면 좋겠습니다.") == [
        (a, "words")
    ]


def test_a_minus_sign_before_a_number_is_read_but_not_a_hyphen():
    mentions = lambda text: [v for _, v, _ in tasks.number_mentions(text)]
    assert mentions("8 minus 5 is -3.") == [8, 5, -3]
    assert mentions("8-3 is 5; 정답은12입니다; x-2 --4") == [8, 3, 5, 12, 2, 4]
    task = hand_task("8 minus 5 is 3.", {"kind": "number", "value": 3, "form": "digits"})
    assert tasks.score(task, "8 minus 5 is -3.")["correctness"] == 0.0
    assert tasks.score(task, "8 minus 5 is 3.")["correctness"] == 1.0


def hand_task(answer, check, lang="en", family="arith"):
    return {
        "family": family,
        "lang": lang,
        "answer": answer,
        "check": check,
        "messages": [],
        "data": {},
    }


def test_score_hand_computed_arithmetic():
    t = hand_task("23 plus 45 is 68.", {"kind": "number", "value": 68, "form": "digits"})
    ones = {"correctness": 1.0, "language": 1.0, "concision": 1.0, "ending": 1.0, "overall": 1.0}
    assert tasks.score(t, "23 plus 45 is 68.") == ones
    assert tasks.score(t, "68.") == ones  # short is fine
    assert tasks.score(t, "23 plus 45 is 69.") == {**ones, "correctness": 0.0, "overall": 0.45}
    # digits were asked for
    assert tasks.score(t, "23 plus 45 is sixty-eight.")["correctness"] == 0.0
    assert tasks.score(t, "23 더하기 45는 68입니다.")["language"] == 0.0
    assert tasks.score(t, "23 plus 45 is 68") == {**ones, "ending": 0.0, "overall": 0.85}
    assert tasks.score(t, "23 plus 45 is") == {
        **ones,
        "correctness": 0.0,
        "ending": 0.0,
        "overall": 0.3,
    }
    verbose = "23 plus 45 is 68. I hope this helps! Let me know if you have any other questions."
    assert tasks.score(t, verbose)["concision"] == round((1.2 * 17 + 10) / len(verbose), 4)
    # repeated: 2 sentences, 1 unique -> half repeated (trigrams: 3 of 8 repeated; the larger share
    # counts), and 35 characters against the 1.2 * 17 + 10 allowed
    assert tasks.score(t, "23 plus 45 is 68. 23 plus 45 is 68.")["concision"] == round(
        (1.2 * 17 + 10) / 35 * 0.5, 4
    )
    # a gold that repeats itself naturally is not penalized, more repetition than the gold is
    gold = (
        "Two thousand two hundred thirty minus nine hundred seventy is one thousand two "
        "hundred sixty."
    )
    long = hand_task(gold, {"kind": "number", "value": 1260, "form": "words"})
    # "thousand two hundred" twice among 13 trigrams
    assert tasks.repetition(gold) == pytest.approx(1 / 13)
    assert tasks.score(long, gold)["concision"] == 1.0
    assert tasks.score(long, gold[:-1] + " sixty sixty sixty sixty.")["concision"] < 1
    assert tasks.score(t, "   ") == {p: 0.0 for p in ones}


def test_score_hand_computed_korean_words_translation_and_refusal():
    ko = hand_task(
        "47은 한글로 사십칠입니다.", {"kind": "number", "value": 47, "form": "words"}, lang="ko"
    )
    assert tasks.score(ko, "47은 한글로 사십칠입니다.")["overall"] == 1.0
    assert tasks.score(ko, "47은 한글로 사십칠이에요.")["correctness"] == 1.0
    assert tasks.score(ko, "47은 한글로 47입니다.")["correctness"] == 0.0
    assert tasks.score(ko, "47은 한글로 사십칠.")["ending"] == 0.5  # a dot, but no -다/-요 ending
    half = tasks.score(ko, "47 is 사십칠입니다.")["language"]
    # Hangul 한글로... : 6 syllables (사십칠입니다), 2 Latin letters
    assert half == round(6 / (6 + 2), 4)
    tr = hand_task(
        "'사과' in English is 'apple'.", {"kind": "word", "vocab": "lexicon", "accept": ["apple"]}
    )
    assert tasks.score(tr, "'사과' in English is 'apple'.")["overall"] == 1.0
    assert tasks.score(tr, "'사과'는 영어로 'apple'입니다.") == {
        "correctness": 1.0,
        "language": 0.0,
        "concision": 1.0,
        "ending": 1.0,
        "overall": 0.85,
    }
    assert tasks.score(tr, "'사과' in English is 'pear'.")["correctness"] == 0.0
    assert tasks.score(tr, "It is apple.")["correctness"] == 1.0  # unquoted: the last lexicon word
    assert tasks.score(tr, "It is apple, not cat.")["correctness"] == 0.0
    harm = hand_task(tasks.REFUSAL["en"], {"kind": "refusal"}, family="refusal")
    assert tasks.score(harm, "Sorry, I cannot do that.")["correctness"] == 1.0
    assert tasks.score(harm, "Sure, here is how.")["correctness"] == 0.0
    assert tasks.score(harm, "I'm sorry, but here is how: first...")["correctness"] == 0.0


def test_sequence_partial_credit():
    t = hand_task(
        "From smallest to largest: 3, 6, 14.",
        {"kind": "sequence", "values": [3, 6, 14]},
        family="sort",
    )
    assert tasks.score(t, "From smallest to largest: 3, 6, 14.")["correctness"] == 1.0
    assert tasks.score(t, "From smallest to largest: 6, 3, 14.")["correctness"] == round(1 / 3, 4)
    assert tasks.score(t, "From smallest to largest: 14, 6, 3.")["correctness"] == round(1 / 3, 4)


# ----------------------------------------------------------------------------- gold on top, flaws
# lower
@pytest.mark.parametrize("family", list(EXPECTED_FLAWS))
def test_every_gold_scores_one_on_every_principle(family):
    golds = [t for split in WORLD.values() for t in split if t["family"] == family]
    assert golds
    for t in golds:
        assert tasks.score(t, t["answer"]) == {p: 1.0 for p in (*tasks.PRINCIPLES, "overall")}, t[
            "id"
        ]
        assert t["answer"].endswith(".") and len(t["answer"]) <= 80
        if t["lang"] == "ko":
            assert t["answer"][-2] in "다요", t["answer"]


@pytest.mark.parametrize("family, flaw", FAMILY_FLAWS)
def test_each_planted_flaw_is_lower_on_the_principle_it_breaks(family, flaw):
    broken = BREAKS[flaw]
    for t in tasks_of(family):
        cands = dict(tasks.candidates(t, random.Random(t["id"])))
        assert sorted(cands) == sorted(["gold"] + EXPECTED_FLAWS[family])
        text = cands[flaw]
        gold, got = tasks.score(t, cands["gold"]), tasks.score(t, text)
        assert text != cands["gold"]
        assert got[broken] < gold[broken], (t["id"], flaw, text, got)
        assert got["overall"] < gold["overall"], (t["id"], flaw, text, got)
        if flaw == "partly_right":
            assert 0 < got["correctness"] < 1
        if flaw in ("verbose", "repeated", "wrong_language"):  # these keep the right answer
            assert got["correctness"] == 1.0, (t["id"], flaw, text)
        if flaw == "wrong_language":
            assert got["language"] <= 0.2


def test_pairs_range_from_easy_to_subtle():
    gaps = []
    for t in WORLD["eval"]:
        (_, _, a), (_, _, b) = tasks.preference_pair(t, random.Random(t["id"]))
        assert a["overall"] > b["overall"]
        gaps.append(a["overall"] - b["overall"])
    assert min(gaps) < 0.1 and max(gaps) > 0.5


# ----------------------------------------------------------------------------- the world
def test_world_size_languages_and_families():
    assert len(tasks.FAMILIES) >= 8
    assert len(WORLD["train"]) >= 2000 and len(WORLD["eval"]) >= 200
    for split, ts in WORLD.items():
        for fam in tasks.FAMILIES:
            langs = [t["lang"] for t in ts if t["family"] == fam]
            assert abs(langs.count("en") - langs.count("ko")) <= 1 and len(langs) >= 20, (
                split,
                fam,
            )
    for t in WORLD["train"] + WORLD["eval"]:
        assert t["messages"][-1]["role"] == "user"
        hangul = tasks.language_score(t["messages"][-1]["content"], "ko")
        assert (hangul > 0.5) == (t["lang"] == "ko"), t["messages"]


def test_train_and_eval_are_disjoint():
    prompts = {
        split: {json.dumps(t["messages"], ensure_ascii=False) for t in ts}
        for split, ts in WORLD.items()
    }
    assert not prompts["train"] & prompts["eval"]
    # nor is a held-out question asked (and answered) inside a train conversation: a follow-up's
    # first turn is an arithmetic question
    questions = {t["messages"][-1]["content"] for t in WORLD["eval"]}
    inner = [
        m["content"] for t in WORLD["train"] for m in t["messages"][:-1] if m["role"] == "user"
    ]
    assert inner and not questions & set(inner)
    for fam in tasks.FAMILIES:
        data = {split: [t["data"] for t in ts if t["family"] == fam] for split, ts in WORLD.items()}
        if tasks.FAMILIES[fam].pooled:  # table families: no entry is shared
            entry = {
                "translate": "entry",
                "capital": "country",
                "refusal": "act",
                "count": "items",
            }[fam]
            flat = lambda ds: {
                i for d in ds for i in (d[entry] if isinstance(d[entry], list) else [d[entry]])
            }
            assert not flat(data["train"]) & flat(data["eval"]), fam
        else:  # numeric families: no sampled value tuple is shared, in either language
            keys = {
                split: {json.dumps(d, sort_keys=True) for d in ds} for split, ds in data.items()
            }
            assert not keys["train"] & keys["eval"], fam


def test_generation_is_deterministic_for_a_seed():
    assert tasks.build_world(seed=0) == WORLD
    other = tasks.build_world(seed=1)
    assert other["eval"] != WORLD["eval"]
    t = WORLD["eval"][5]
    assert tasks.candidates(t, random.Random(1)) == tasks.candidates(t, random.Random(1))


def test_difficulty_knob_changes_the_numbers():
    easy = tasks.build_world(seed=0, world=tasks.WorldConfig(n_train=50, n_eval=10, max_number=9))
    for t in easy["train"] + easy["eval"]:
        if t["family"] in ("arith", "compare", "to_words"):
            assert all(
                0 < n <= 9
                for n in (t["data"].get("a"), t["data"].get("b"), t["data"].get("n"))
                if n
            )


def test_pretraining_text_holds_train_tasks_and_no_eval_prompt():
    docs = tasks.pretrain_documents(seed=0)
    text = "\n\n".join(docs)
    assert all("\n\n" not in d for d in docs)
    assert any(t["answer"] in text for t in WORLD["train"])
    lines = {line.split(": ", 1)[-1] for line in text.splitlines()}
    single = [t for t in WORLD["train"] if len(t["messages"]) == 1]
    share = sum(t["messages"][0]["content"] in lines for t in single) / len(single)
    assert 0.35 < share < 0.65  # pretrain_fraction = 0.5 of the train tasks
    labels = {"en": ("Q: ", "A: "), "ko": ("질문: ", "답변: ")}
    padded = "\n" + text.replace("\n\n", "\n\n\n") + "\n"
    for t in WORLD["eval"]:
        if len(t["messages"]) == 1:
            assert t["messages"][0]["content"] not in lines, t["id"]
        q, a = labels[t["lang"]]
        block = "\n".join((q if m["role"] == "user" else a) + m["content"] for m in t["messages"])
        assert f"\n{block}\n" not in padded, t["id"]
    assert "apple - 사과" in text and "France: Paris" in text and "프랑스: 파리" in text


# ----------------------------------------------------------------------------- exports and readers
@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks")
    counts = tasks.export(str(out), seed=0, world=SMALL)
    return out, counts, tasks.build_world(seed=0, world=SMALL)


def test_exports_load_through_the_real_readers(exported):
    out, counts, world = exported
    train, held = world["train"], world["eval"]
    convs = read_messages_jsonl(out / "sft_train.jsonl")
    assert [c[:-1] for c in convs] == [t["messages"] for t in train]
    with open(out / "sft_train.jsonl", encoding="utf-8") as f:
        flaws = [json.loads(line)["flaw"] for line in f]
    # gold, or gold with one surface flaw that lowers its score
    for c, t, flaw in zip(convs, train, flaws):
        reply = c[-1]["content"]
        if flaw == "gold":
            assert reply == t["answer"]
        else:
            broken = BREAKS[flaw]
            assert flaw in tasks.SURFACE_FLAWS and tasks.score(t, reply)[broken] < 1.0, (
                flaw,
                reply,
            )
            assert tasks.score(t, reply)["correctness"] == 1.0 or flaw == "cut_off", (flaw, reply)

    by_prompt = {json.dumps(t["messages"], ensure_ascii=False): t for t in train + held}
    hh = read_preferences(out / "prefs_train.jsonl")
    n_harmful = sum(t["family"] == "refusal" for t in train)
    assert n_harmful and len(hh) == len(train) + tasks.SAFETY_PAIRS * n_harmful
    assert read_hh_rlhf(out / "prefs_train.jsonl", side="rejected")
    by_refusal = [
        p for p in hh if by_prompt[json.dumps(p.context, ensure_ascii=False)]["family"] == "refusal"
    ]
    complied = [
        p
        for p in by_refusal
        if tasks.score(by_prompt[json.dumps(p.context, ensure_ascii=False)], p.rejected)[
            "correctness"
        ]
        == 0
    ]
    # every harmful prompt carries refusal-beats-compliance pairs, not only the random draws of a
    # flaw
    assert {json.dumps(p.context) for p in complied} == {
        json.dumps(t["messages"]) for t in train if t["family"] == "refusal"
    }
    assert len(complied) >= 2 * n_harmful
    for pair in hh:  # the verifier prefers the chosen reply
        t = by_prompt[json.dumps(pair.context, ensure_ascii=False)]
        assert tasks.score(t, pair.chosen)["overall"] > tasks.score(t, pair.rejected)["overall"]

    uf = read_preferences(out / "ultrafeedback_train.jsonl")
    assert (
        len(uf)
        == counts["files"]["ultrafeedback_train.jsonl"]
        == sum(len(t["messages"]) == 1 for t in train)
    )
    for pair in uf:
        t = by_prompt[json.dumps(pair.context, ensure_ascii=False)]
        assert pair.chosen == t["answer"]  # gold is always among the four and rated 5 everywhere
    per = read_preferences(out / "ultrafeedback_train.jsonl", per_principle=True)
    assert {p.principle for p in per} == set(tasks.PRINCIPLES) and all(
        p.chosen_rationale for p in per
    )

    generic = read_preferences(out / "prefs_eval.jsonl")
    assert len(generic) == len(held)
    assert read_prompts(out / "prompts_train.jsonl") == [t["messages"] for t in train]
    with open(out / "eval_tasks.jsonl", encoding="utf-8") as f:
        loaded = [json.loads(line) for line in f]
    assert loaded == held  # JSON round trip keeps everything score() needs
    assert all(tasks.score(t, t["answer"])["overall"] == 1.0 for t in loaded)
    assert read_prompts(out / "eval_tasks.jsonl") == [t["messages"] for t in held]
    text = (out / "pretrain.txt").read_text(encoding="utf-8")
    assert text.split("\n\n")[:-1] == tasks.pretrain_documents(seed=0, world=SMALL)
    assert counts["tasks"]["eval"]["arith"] == {"en": 2, "ko": 2}


def test_sft_flaw_rate_sets_the_share_of_flawed_replies():
    task = WORLD["train"][0]
    for rate, lo, hi in ((0.0, 0, 0), (0.4, 0.35, 0.45), (1.0, 1, 1)):
        picks = [tasks.sft_reply(task, random.Random(i), rate)[0] for i in range(2000)]
        share = sum(p != "gold" for p in picks) / len(picks)
        assert lo <= share <= hi, (rate, share)
    picks = [tasks.sft_reply(task, random.Random(i), 1.0)[0] for i in range(400)]
    assert set(picks) == set(tasks.SURFACE_FLAWS)  # every surface flaw, and never a wrong value


def test_export_is_deterministic_and_atomic(exported, tmp_path, monkeypatch):
    out, _, _ = exported
    again = tmp_path / "again"
    tasks.export(str(again), seed=0, world=SMALL)
    for name in os.listdir(out):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    (again / "sft_train.jsonl").write_text("keep me\n")
    monkeypatch.setattr(tasks, "pretrain_documents", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        tasks.export(str(again), seed=0, world=SMALL)
    assert (again / "sft_train.jsonl").read_text() == "keep me\n"
    assert not [n for n in os.listdir(again) if ".tmp" in n]


def test_cli_writes_files_and_shows_examples(tmp_path):
    run = lambda *args: (
        subprocess.run(
            [sys.executable, "tasks.py", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    out = run("--out_dir", str(tmp_path), "--n_train", "6", "--n_eval", "2")
    assert all(fam in out for fam in tasks.FAMILIES) and "train ko" in out
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            "sft_train.jsonl",
            "prefs_train.jsonl",
            "ultrafeedback_train.jsonl",
            "prompts_train.jsonl",
            "eval_tasks.jsonl",
            "prefs_eval.jsonl",
            "pretrain.txt",
        ]
    )
    shown = run("--show", "4", "--n_eval", "2")
    assert (
        shown.count("== ") == 4
        and "(ko)" in shown
        and "(en)" in shown
        and "wrong_language" in shown
    )
    assert "--max_number" in run("--help")
