"""evaluate.py and the modules it runs (benchmarks.py, report.py): bits per byte against
hand-computed values, multiple choice picks the most probable letter (stub models whose logits we
set, and the fast and exact paths agree on a real model), FIM prompts laid out exactly as data.py
trains them, win-rate accounting over both orders, the nested knockout, readers' file:line errors,
and the whole report on tiny random checkpoints (structure and sanity: finite numbers, rates in
[0, 1], both orders; report.md renders from report.json alone)."""

import filecmp
import json
import math
import os
import random

import pytest
import torch
import torch.nn as nn

import benchmarks as B
import data
import evaluate as E
import report as report_md
from conftest import logits_read_at, report_numbers
from corpus import hangul_share
from model import Transformer, config_from_preset
from readers import LETTERS, read_mc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
EVALS = os.path.join(ROOT, "evals")


class TableModel(nn.Module):
    """logits at every position = table[current token]: a bigram model whose probabilities we
    choose."""

    def __init__(self, table, max_seq_len=64):
        super().__init__()
        self.table = table  # (V, V)
        self.cfg = config_from_preset("tiny", vocab_size=table.size(0), max_seq_len=max_seq_len)
        self.lm_head = nn.Linear(1, 1)  # evaluate reads the device from lm_head.weight

    def forward(self, idx, targets=None, loss_mask=None, last_only=False, reduction="mean", **kw):
        logits = logits_read_at(self.table[idx], last_only)  # (B, T or 1, V)
        if targets is None:
            return logits, None
        # Transformer's loss written out: -log p(target), weighted, 0 where not counted
        weight = (targets != -100).float() * (1.0 if loss_mask is None else loss_mask)
        logp = logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        per_position = -logp * weight  # (B, T)
        total = weight.sum()  # 0, not NaN, with none counted
        mean = per_position.sum() / torch.where(total > 0, total, torch.ones_like(total))
        return None, per_position if reduction == "none" else mean


# ----------------------------------------------------------------------------- bits per byte
@pytest.mark.parametrize("seq_len", [1, 2, 3, 4, 10])
def test_bits_per_byte_hand_computed_uniform(seq_len):
    # V = 4, uniform logits: ln 4 nats per token. Targets 2, 3, 1, 2 carry 2 + 3 + 1 + 2 = 8 bytes.
    # bpb = 4 * ln 4 / (8 * ln 2) = 1.0, whatever the window length (each token after the first
    # predicted once).
    model = TableModel(torch.zeros(4, 4))
    r = B.lm_eval(
        model, [1, 2, 3, 1, 2], torch.tensor([0, 1, 2, 3]).numpy(), seq_len=seq_len, batch_size=2
    )
    assert r["tokens"] == 4 and r["bytes"] == 8
    assert r["loss"] == pytest.approx(math.log(4))
    assert r["bpb"] == pytest.approx(1.0)


def test_bits_per_byte_hand_computed_bigram():
    # The model gives the successor (t + 1) % 4 logit ln 3, the others 0: p = 3 / 6 = 1/2, ln 2 nats
    # a token.
    # Stream 0 1 2 3 0 1: 5 targets 1 2 3 0 1 with bytes 1 1 1 2 1 = 6  ->  bpb = 5 ln 2 / (6 ln 2)
    # = 5/6.
    table = torch.zeros(4, 4)
    for t in range(4):
        table[t, (t + 1) % 4] = math.log(3)
    stream, lengths = [0, 1, 2, 3, 0, 1], torch.tensor([2, 1, 1, 1]).numpy()
    r = B.lm_eval(TableModel(table), stream, lengths, seq_len=2)
    assert r["loss"] == pytest.approx(math.log(2))
    assert r["bpb"] == pytest.approx(5 / 6)
    assert B.lm_eval(TableModel(table), stream, lengths, max_tokens=2)["tokens"] == 2
    assert B.bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)


def test_token_byte_lengths_add_up_to_utf8_bytes(small_tokenizer):
    tok = small_tokenizer
    lengths = B.token_byte_lengths(tok)
    texts = [
        "모든 인간은 태어날 때부터 자유롭다.",
        "def f(x):\n    return x  # ok",
        "emoji 🙂 and 漢字",
        "  \t\n",
    ]
    for text in texts:
        assert lengths[tok.encode(text)].sum() == len(text.encode("utf-8"))
    assert lengths[[tok.eos_id, tok.bos_id, tok.eot_id, tok.pad_id]].sum() == 0


# ----------------------------------------------------------------------------- multiple choice
class StubTok:
    """Just enough tokenizer for mc_eval; letters are one token each (" A" -> 20, ...) or, with
    two_token, the multi-token kind a small vocabulary gives (" C" -> [40, 22])."""

    pad_id, bos_id, user_id, assistant_id, eot_id = 0, 2, 5, 6, 7

    def __init__(self, two_token=False):
        self.two_token = two_token

    def encode(self, text):
        if len(text) == 2 and text[0] == " " and text[1] in LETTERS:
            k = LETTERS.index(text[1])
            return [40, 20 + k] if self.two_token and k >= 2 else [20 + k]
        return [30 + ord(c) % 8 for c in text]

    def render_chat(self, messages, add_generation_prompt=False):
        ids = [self.bos_id]
        for m in messages:
            ids += [self.user_id] + self.encode(m["content"]) + [self.eot_id]
        return ids + [self.assistant_id] * add_generation_prompt, None


def constant_model(bias):
    # the same logits after every token
    return TableModel(bias.expand(len(bias), -1).clone(), max_seq_len=256)


def hand_letter_logprobs(bias, conts):
    logp = bias.log_softmax(0)
    return torch.tensor([float(sum(logp[t] for t in c)) for c in conts])


@pytest.mark.parametrize("two_token", [False, True])
def test_mc_picks_the_letter_with_the_highest_probability(two_token):
    tok = StubTok(two_token)
    bias = torch.zeros(48)
    bias[20], bias[21], bias[22], bias[23], bias[40] = 1.0, 0.5, 3.0, -1.0, 2.0  # C most likely
    conts = [tok.encode(" " + L) for L in "ABCD"]
    # the letters' probabilities, normalized over A-D
    expected = hand_letter_logprobs(bias, conts).softmax(0)
    records = [{"question": "Q?", "choices": list("wxyz"), "answer": a} for a in range(4)]
    r = B.mc_eval(constant_model(bias), tok, records)
    pick = int(expected.argmax())
    # exactly one of the four records has the picked answer
    assert r["accuracy"] == pytest.approx(1 / 4)
    # mean over answers 0..3 of p(answer)
    assert r["p_correct"] == pytest.approx(float(expected.mean()))
    one = B.mc_eval(constant_model(bias), tok, [records[pick]])
    assert one["accuracy"] == 1.0 and one["p_correct"] == pytest.approx(float(expected[pick]))
    assert one["letter_tokens"] == ("multi-token" if two_token else "one token each")
    assert r["chance"] == 0.25


def test_continuation_logprobs_fast_and_exact_paths_agree():
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=64, max_seq_len=32)).eval()
    prompts = [[1, 5, 9, 3], [2, 8]]
    fast = B.continuation_logprobs(model, prompts, [[[10], [11]], [[12], [13]]], pad_id=0)
    exact = B.continuation_logprobs(
        model, prompts, [[[10], [11], [14, 15]], [[12], [13], [16, 17]]], pad_id=0
    )
    for f, x in zip(fast, exact):
        assert f == pytest.approx(x[:2], abs=1e-5)
    with torch.no_grad():  # log p(14 | prompt) + log p(15 | prompt, 14), by hand
        lp = lambda ids: model(torch.tensor([ids]))[0][0, -1].log_softmax(-1)
        by_hand = float(lp([1, 5, 9, 3])[14] + lp([1, 5, 9, 3, 14])[15])
    assert exact[0][2] == pytest.approx(by_hand, abs=1e-5)


def test_mc_prompt_shows_lettered_options_and_ends_with_the_answer_prefix(small_tokenizer):
    tok = small_tokenizer
    ids = B.mc_prompt(tok, "대한민국의 수도는?", ["부산", "서울"])
    assert ids[:2] == [tok.bos_id, tok.user_id] and tok.assistant_id in ids
    assert (
        tok.decode(ids[ids.index(tok.user_id) + 1 : ids.index(tok.eot_id)])
        == "대한민국의 수도는?\nA. 부산\nB. 서울\n" + B.MC_INSTRUCTION["ko"]
    )
    assert tok.decode(ids[ids.index(tok.assistant_id) + 1 :]) == B.MC_ANSWER_PREFIX["ko"]
    en = B.mc_prompt(tok, "What is the capital of Korea?", ["Busan", "Seoul"])
    assert tok.decode(en[en.index(tok.assistant_id) + 1 :]) == "Answer:"
    # for base models
    plain = B.mc_prompt(tok, "What is the capital of Korea?", ["Busan", "Seoul"], chat=False)
    assert (
        plain[0] == tok.eos_id
        and tok.decode(plain[1:])
        == "What is the capital of Korea?\nA. Busan\nB. Seoul\n"
        + B.MC_INSTRUCTION["en"]
        + "\nAnswer:"
    )


def test_shipped_mc_sets_parse_balanced_and_in_their_language():
    for lang in ("ko", "en"):
        records = read_mc(os.path.join(EVALS, f"mc_{lang}.jsonl"))
        assert len(records) == 20
        assert all(len(r["choices"]) == 4 for r in records)
        # each letter right 5 times
        assert sorted(r["answer"] for r in records) == sorted(list(range(4)) * 5)
        assert all(
            (hangul_share(r["question"], of="hangul+latin") >= 0.3) == (lang == "ko")
            for r in records
        )


def test_mc_reader_layouts_and_errors(tmp_path):
    # 1-based "answer", A-D columns
    kmmlu = read_mc(os.path.join(FIXTURES, "mc", "kmmlu_style.jsonl"))
    assert [r["answer"] for r in kmmlu] == [2, 3, 0] and kmmlu[0]["choices"] == [
        "2년",
        "3년",
        "4년",
        "5년",
    ]
    # "B", "(B)", 3 and 5 choices
    letters = read_mc(os.path.join(FIXTURES, "mc", "letter_answers.jsonl"))
    assert [(len(r["choices"]), r["answer"]) for r in letters] == [(3, 1), (5, 1), (5, 3)]
    bad = os.path.join(FIXTURES, "mc", "bad.jsonl")
    with pytest.raises(ValueError, match=r"bad\.jsonl:3: .*answer"):
        read_mc(bad)
    assert len(read_mc(bad, skip_bad=True)) == 1  # lines 3 and 4 skipped, counted on stderr
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        read_mc(str(tmp_path / "nope.jsonl"))


# ----------------------------------------------------------------------------- fill-in-the-middle
CODE_DOC = "".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n\n" for i in range(12))


def test_fim_prompts_are_data_py_psm_layout_of_thirds_of_whole_line_windows(small_tokenizer):
    tok = small_tokenizer
    examples = B.fim_examples([CODE_DOC, "a short line\n" * 20], tok, n=6, max_chars=90, seed=1)
    assert len(examples) == 6
    for prompt, middle in examples:
        assert prompt[:2] == [tok.eos_id, tok.fim_prefix_id] and prompt[-1] == tok.fim_middle_id
        suf = prompt.index(tok.fim_suffix_id)
        prefix, suffix = tok.decode(prompt[2:suf]), tok.decode(prompt[suf + 1 : -1])
        window = prefix + middle + suffix
        assert len(window) <= 90 and (window in CODE_DOC or window in "a short line\n" * 20)
        assert len(prefix) == len(window) // 3 and len(prefix + middle) == 2 * len(window) // 3
        assert prompt[1:] == data.fim_ids(prefix, "", suffix, tok)


def test_fim_scores_exact_and_prefix_match(small_tokenizer, monkeypatch):
    tok = small_tokenizer
    examples = [([1, 2], "abcdef"), ([1, 2], "hello world"), ([1, 2], "xyz")]
    scripted = [
        tok.encode("abcdef") + [tok.eos_id],  # right and stopped: exact
        tok.encode("hello"),  # 5 of 11 characters
        tok.encode("xyz"),
    ]  # right but did not stop: not exact, prefix 1
    monkeypatch.setattr(B, "generate", lambda *a, **k: scripted)
    r = B.fim_eval(TableModel(torch.zeros(4, 4)), tok, examples)
    assert r == {
        "exact": pytest.approx(1 / 3),
        "prefix": pytest.approx((1 + 5 / 11 + 1) / 3),
        "n": 3,
    }
    assert B.prefix_match("abcx", "abcd") == 0.75 and B.prefix_match("", "abc") == 0.0


# ----------------------------------------------------------------------------- win rates, knockout,
# tasks
def test_hcx_outcomes_both_orders():
    first = [True, True, False, False, 0.5]
    second = [True, False, True, False, 0.5]
    assert E.hcx_outcomes(first, second) == [1.0, 0.5, 0.5, 0.0, 0.5]
    s = E.win_summary(first, second)
    assert (s["wins"], s["ties"], s["losses"], s["n_prompts"], s["n_judgments"]) == (1, 3, 1, 5, 10)
    assert s["win_rate"] == pytest.approx(2.5 / 5)
    assert s["first_order_win_rate"] == pytest.approx(2.5 / 5) and s[
        "second_order_win_rate"
    ] == pytest.approx(2.5 / 5)


def test_verifier_verdicts_ties_count_half():
    cand = [{"overall": 0.9}, {"overall": 0.5}, {"overall": 0.1}]
    base = [{"overall": 0.5}, {"overall": 0.5}, {"overall": 0.7}]
    first, second = E.verifier_verdicts(cand, base)
    assert first == second == [1.0, 0.5, 0.0]
    assert E.win_summary(first, second)["win_rate"] == pytest.approx(0.5)


def test_judge_verdicts_use_each_order_and_skip_identical_replies():
    calls = []

    # position-biased: the reply shown first wins unless the other is longer
    def judge(contexts, pairs):
        calls.append(pairs)
        return {
            "first_order_a": [len(a) >= len(b) for a, b in pairs],
            "second_order_a": [len(a) > len(b) for a, b in pairs],
        }

    cand, base = ["long reply", "same", "x", "abc"], ["short", "same", "longer", "xyz"]
    first, second = E.judge_verdicts(judge, [[{"role": "user", "content": "q"}]] * 4, cand, base)
    # identical replies not asked
    assert calls == [[("long reply", "short"), ("x", "longer"), ("abc", "xyz")]]
    # won both, tied, lost both, split by position
    assert E.hcx_outcomes(first, second) == [1.0, 0.5, 0.0, 0.5]


def test_sampled_outcomes_and_paired_win_by_hand():
    cand = [[{"overall": 0.9}, {"overall": 0.5}], [{"overall": 0.1}, {"overall": 0.1}]]
    base = [[{"overall": 0.5}, {"overall": 0.5}], [{"overall": 0.7}, {"overall": 0.1}]]
    assert E.sampled_outcomes(cand, base) == [0.75, 0.25]  # (1 + 0.5) / 2 and (0 + 0.5) / 2
    # a prompt or a sample missing on one side is an error, not a shorter comparison
    for short_cand, short_base in ((cand[:1], base), (cand, [base[0], base[1][:1]])):
        with pytest.raises(ValueError):
            E.sampled_outcomes(short_cand, short_base)
    win = E.paired_win([1.0] * 30 + [0.5] * 10)
    assert win["win_rate"] == pytest.approx(0.875) and win["significant"] and win["ci"][0] > 0.5
    assert (win["wins"], win["ties"], win["losses"]) == (30, 10, 0)
    assert not E.paired_win([1.0, 0.0] * 20)["significant"]


def test_bootstrap_interval_matches_the_normal_approximation():
    assert E.bootstrap_interval([0.5] * 50) == [0.5, 0.5] and E.bootstrap_interval([]) is None
    x = [1.0] * 300 + [0.0] * 700  # mean 0.3, standard error sqrt(0.21 / 1000) = 0.0145
    lo, hi = E.bootstrap_interval(x, seed=1)
    assert lo == pytest.approx(0.3 - 1.96 * 0.0145, abs=0.004) and hi == pytest.approx(
        0.3 + 1.96 * 0.0145, abs=0.004
    )
    assert E.bootstrap_interval(x, seed=1) == [lo, hi]  # seeded


def test_nested_knockout_gives_best_of_every_power_of_two_in_n_minus_1_judgments():
    values = [[3, 9, 1, 4, 7, 2, 8, 5], [1, 2, 3, 4, 5, 6, 7, 8]]
    judged = []

    def better(contexts, pairs):
        judged.extend(pairs)
        return [int(b > a) for a, b in pairs]

    picks = E.nested_knockout(["c0", "c1"], values, better)
    assert sorted(picks) == [1, 2, 4, 8]
    for n, groups in picks.items():  # a judge that is always right picks each group's best
        assert [[v[w] for w in ws] for v, ws in zip(values, groups)] == [
            [max(v[g : g + n]) for g in range(0, 8, n)] for v in values
        ]
    assert picks[2][0] == [1, 3, 4, 6] and picks[8] == [[1], [7]]
    assert len(judged) == 2 * 7
    first_wins = E.nested_knockout(["c"], [[5, 6, 7, 8]], lambda c, p: [0] * len(p))
    assert first_wins == {1: [[0, 1, 2, 3]], 2: [[0, 2]], 4: [[0]]}


def test_rejection_curve_counts_every_group_of_n_samples(monkeypatch):
    """Samples whose verifier score is known (id v scores v / 10, correct from 8 up): each point is
    the mean over the disjoint groups of N samples of the judge's pick, by hand."""
    import self_judge
    import tasks as task_world

    values = [[3, 9, 1, 4, 7, 2, 8, 5], [1, 2, 3, 4, 5, 6, 7, 8]]
    # odd values ended with <|endofturn|> (98), even ones hit the length cap: judges get them so
    drawn = [[[v] + [98] * (v % 2) for v in per] for per in values]
    monkeypatch.setattr(
        self_judge,
        "sample_responses",
        lambda policy, tok, contexts, n, *a, **k: [per[:n] for per in drawn],
    )
    monkeypatch.setattr(
        task_world,
        "score",
        lambda task, text: {"overall": int(text) / 10, "correctness": float(int(text) >= 8)},
    )

    class Tok:
        eot_id, eos_id = 98, 99
        decode = staticmethod(lambda ids: str(ids[0]))

    tasks = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(2)]
    seen = []  # every reply the judges were handed

    def right(cx, pairs):
        seen.extend(r for pair in pairs for r in pair)
        return {"winners": [int(b[0] > a[0]) for a, b in pairs]}

    def first(cx, pairs):  # the first-shown reply always wins
        seen.extend(r for pair in pairs for r in pair)
        return {"winners": [0] * len(pairs)}

    curve = E.rejection_curve(None, Tok(), right, tasks, max_n=8, other_judges={"first": first})
    assert seen and all(r in drawn[0] + drawn[1] for r in seen)  # as drawn, stop ids and all
    assert [98] in [r[1:] for r in seen]
    assert [c["n"] for c in curve] == [1, 2, 4, 8]
    one, two, four, eight = curve
    assert one["overall"] == pytest.approx((39 / 8 + 4.5) / 20) and one["gain_vs_1"] == 0
    # group winners: p0 9 4 7 8, p1 2 4 6 8 -> per prompt 0.7 and 0.5, 3 of 8 correct
    assert two["per_prompt"] == pytest.approx([0.7, 0.5]) and two["correct_share"] == 3 / 8
    assert two["gain_vs_1"] == pytest.approx(((0.7 - 0.4875) + (0.5 - 0.45)) / 2)
    lo, hi = two["gain_vs_1_ci"]
    assert lo == pytest.approx(0.05) and hi == pytest.approx(0.2125)  # two prompts: their range
    assert four["per_prompt"] == pytest.approx([0.85, 0.6])
    assert eight["overall"] == pytest.approx(0.85)
    for c in curve:  # an always-right judge is the verifier's own best of each group
        assert c["oracle_overall"] == pytest.approx(c["overall"])
    # the first-shown reply always wins: each group's first sample
    assert [c["first_overall"] for c in curve] == pytest.approx(
        [one["overall"], (0.475 + 0.4) / 2, (0.5 + 0.3) / 2, (0.3 + 0.1) / 2]
    )
    # a judge that tokenizes otherwise reads text; the other judges (a reward model shares the
    # policy's tokenizer) still read the ids as drawn
    seen.clear()
    read = []

    def text_judge(cx, pairs):
        read.extend(r for pair in pairs for r in pair)
        return {"winners": [int(int(b) > int(a)) for a, b in pairs]}

    again = E.rejection_curve(
        None, Tok(), text_judge, tasks, max_n=8, as_text=True, other_judges={"first": first}
    )
    assert read and all(isinstance(r, str) for r in read)
    assert seen and all(r in drawn[0] + drawn[1] for r in seen)
    assert [c["overall"] for c in again] == [c["overall"] for c in curve]


def test_sampled_replies_are_kept_as_drawn(monkeypatch):
    """A sampled <|endofturn|> stays on its reply (the reward model reads its reward there; the
    KL scores it); a reply the length cap cut gets none. Chunks are seeded per chunk."""
    import self_judge

    class Tok:
        eot_id, eos_id = 98, 99

    calls = []

    def fake(model, tok, contexts, k, max_new_tokens, temperature, top_p, seed):
        calls.append((len(contexts), seed))
        return [[[7, 98], [5, 6, 4]] for _ in contexts]

    monkeypatch.setattr(self_judge, "sample_responses", fake)
    got = E.sampled_replies(None, Tok(), [[{"role": "user", "content": "q"}]] * 3, 2, 3, 0, 4)
    assert got == [[[7, 98], [5, 6, 4]]] * 3
    assert [n for n, _ in calls] == [2, 1] and len({s for _, s in calls}) == 2


def test_pick_tasks_covers_every_family_and_language():
    tasks = [
        {"family": f, "lang": lg, "i": i}
        for f in ("a", "b", "c")
        for lg in ("en", "ko")
        for i in range(3)
    ]
    picked = E.pick_tasks(tasks, 6)
    assert sorted((t["family"], t["lang"]) for t in picked) == sorted(
        {(t["family"], t["lang"]) for t in tasks}
    )
    assert len(E.pick_tasks(tasks, 0)) == len(tasks)


def test_summarize_scores_by_hand():
    tasks = [
        {"family": "f", "lang": "en"},
        {"family": "f", "lang": "ko"},
        {"family": "g", "lang": "ko"},
    ]
    scores = [
        {"correctness": 1.0, "overall": 1.0},
        {"correctness": 0.5, "overall": 0.6},
        {"correctness": 0.0, "overall": 0.2},
    ]
    s = E.summarize_scores(tasks, scores)
    assert (
        s["overall"] == pytest.approx(0.6)
        and s["correct_share"] == pytest.approx(1 / 3)
        and s["n"] == 3
    )
    assert (
        s["per_lang"]["ko"]["overall"] == pytest.approx(0.4)
        and s["per_family"]["f"]["correct_share"] == 0.5
    )


# ----------------------------------------------------------------------------- the whole report
PHASES = {
    "pretrain": "pretrain",
    "sft": "sft",
    "dpo": "dpo",
    "jsft": "jsft",
    "self_judge": "self_judge",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer (with its efficiency report), data, task exports and five tiny random
    checkpoints."""
    import pretrain
    import tasks
    import tokenizer as T

    root = tmp_path_factory.mktemp("world")
    corpus = {
        lang: [
            json.loads(line)["text"]
            for line in open(os.path.join(FIXTURES, "tokenizer", f"{lang}.jsonl"), encoding="utf-8")
        ]
        for lang in ("ko", "en", "code")
    }
    T.efficiency_report(
        corpus, T.TrainConfig(out=str(root / "tokenizer"), vocab_size=1000, heldout_every=5)
    )
    tok_path = str(root / "tokenizer" / "tokenizer.model")
    tok = T.Tokenizer(tok_path)
    sources = [
        f"{g}:{g}:{os.path.join(FIXTURES, 'tokenizer', g + '.jsonl')}" for g in ("ko", "en", "code")
    ]
    meta = data.build(
        data.DataConfig(
            out_dir=str(root / "data"), tokenizer=tok_path, source=sources, val_fraction=0.2
        ),
        tok,
    )
    tasks.export(str(root / "tasks"), world=tasks.WorldConfig(n_train=4, n_eval=4))
    ckpts = {}
    for k, (name, phase) in enumerate(PHASES.items()):
        torch.manual_seed(k)
        cfg = config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256)
        ckpts[name] = str(root / name)
        start = {"sft": "pretrain", "dpo": "sft", "jsft": "sft", "self_judge": "jsft"}.get(name)
        pretrain.save_checkpoint(
            ckpts[name],
            Transformer(cfg).state_dict(),
            {
                "phase": phase,
                "model": pretrain.dataclasses.asdict(cfg),
                "step": 4,
                "init_from": ckpts.get(start),
            },
            tokenizer_path=tok_path,
        )
        with open(os.path.join(ckpts[name], "metrics.jsonl"), "w") as fh:
            rows = [
                {"step": s, "loss": 7 - s / 10, **({"val_loss": 6.9} if s % 2 == 0 else {})}
                for s in range(1, 5)
            ]
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    torch.manual_seed(9)  # a random reward model (reward_model.py's layout)
    rm = Transformer(
        config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=256, reward_head=True)
    )
    torch.nn.init.normal_(rm.lm_head.weight)
    pretrain.save_checkpoint(
        str(root / "rm"),
        rm.state_dict(),
        {"phase": "reward_model", "model": pretrain.dataclasses.asdict(rm.cfg)},
        tokenizer_path=tok_path,
    )
    return {"root": root, "tok": tok, "meta": meta, "ckpts": ckpts, "rm": str(root / "rm")}


def small_args(world, out):
    r = world["root"]
    return [
        "--ckpts",
        ",".join(f"{n}={p}" for n, p in world["ckpts"].items()),
        "--data-dir",
        str(r / "data"),
        "--tokenizer",
        str(r / "tokenizer" / "tokenizer.model"),
        "--tokenizer-report",
        str(r / "tokenizer" / "report.json"),
        "--tasks-dir",
        str(r / "tasks"),
        "--out-dir",
        str(out),
        "--max-val-tokens",
        "400",
        "--max-tasks",
        "12",
        "--max-judge-pairs",
        "8",
        "--fim-examples",
        "4",
        "--fim-chars",
        "120",
        "--fim-max-new-tokens",
        "12",
        "--max-new-tokens",
        "10",
        "--rejection-prompts",
        "3",
        "--rejection-max-n",
        "4",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--reward-model",
        world["rm"],
        "--mc",
        ",".join(
            os.path.join(FIXTURES, "mc", f) for f in ("kmmlu_style.jsonl", "letter_answers.jsonl")
        ),
    ]


def test_report_structure_and_sanity(world, tmp_path, capsys):
    threads = torch.get_num_threads()
    # with --threads 1 (much faster on a busy 2-core machine)
    E.main(small_args(world, tmp_path / "eval"))
    assert torch.get_num_threads() == threads  # restored
    stdout = capsys.readouterr().out
    assert "| checkpoint | val bpb |" in stdout and "| jsft |" in stdout
    report = json.load(open(tmp_path / "eval" / "report.json", encoding="utf-8"))
    markdown = open(tmp_path / "eval" / "report.md", encoding="utf-8").read()
    for title in (
        "## Summary",
        "## Language modelling",
        "## Tokenizer efficiency",
        "## Fill-in-the-middle",
        "## Multiple choice",
        "## Held-out tasks",
        "## Win rates",
        "## Judge accuracy",
        "## Self-rejection",
    ):
        assert title in markdown
    assert report["notes"] == []
    figures = [
        f
        for f in ("loss_curves.png", "rejection_curve.png")  # when matplotlib is there
        if (tmp_path / "eval" / f).exists()
    ]
    # report.md renders from report.json alone
    assert report_md.to_markdown(report, figures) == markdown
    bad = [(p, v) for p, v in report_numbers(report) if not math.isfinite(v)]
    assert not bad, bad
    names = list(PHASES)
    assert (
        list(report["checkpoints"]) == names
        and [r["checkpoint"] for r in report["summary"]] == names
    )
    ln_v = math.log(world["tok"].vocab_size)
    for name in names:  # a random initialization predicts nearly uniformly: loss ~ ln V
        lm = report["lm"][name]
        assert set(lm) == {"ko", "en", "code", "all"}
        for g in ("ko", "en", "code"):
            assert abs(lm[g]["loss"] - ln_v) < 0.3 and lm[g]["tokens"] == 400
            assert lm[g]["bpb"] == pytest.approx(
                lm[g]["loss"] * lm[g]["tokens"] / (lm[g]["bytes"] * math.log(2))
            )
        mc = report["mc"][name]
        assert mc["kmmlu_style.jsonl"]["format"] == ("plain text" if name == "pretrain" else "chat")
        assert mc["kmmlu_style.jsonl"]["n"] == 3 and mc["kmmlu_style.jsonl"]["chance"] == 0.25
        assert mc["letter_answers.jsonl"]["chance"] == pytest.approx((1 / 3 + 1 / 5 + 1 / 5) / 3)
        t = report["tasks"][name]
        assert t["n"] == 12 and set(t["per_lang"]) == {"en", "ko"} and 0 <= t["overall"] <= 1
        assert report["loss_curves"][name]["val_step"] == [2, 4]
    assert list(report["fim"]) == ["pretrain"] and report["fim"]["pretrain"]["code"]["n"] == 4
    # those trained to judge, and the RM
    assert set(report["judge"]) == {"jsft", "self_judge", "reward_model"}
    assert report["judge"]["reward_model"]["consistency"] == 1.0  # it reads no order
    for j in report["judge"].values():
        assert all(
            0 <= j[k] <= 1 for k in ("acc", "acc_chosen_first", "acc_chosen_second", "consistency")
        )
    for by in ("verifier", "judge"):
        rates = report["win_rates"][by]
        assert set(rates) == set(names) - {"sft"}  # against the baseline, sft
        for w in rates.values():
            assert all(
                0 <= w[k] <= 1
                for k in ("win_rate", "first_order_win_rate", "second_order_win_rate")
            )
            assert (
                w["n_judgments"] == 2 * w["n_prompts"] == 24
                and w["wins"] + w["ties"] + w["losses"] == 12
            )
            assert w["win_rate"] == pytest.approx((w["wins"] + 0.5 * w["ties"]) / 12)
    # 2 samples per prompt, paired intervals, vs baseline and start
    sampled = report["win_rates"]["sampled"]
    assert set(sampled) == set(names) and "vs_baseline" not in sampled["sft"]
    assert (
        {n for n in names if "vs_start" in sampled[n]}
        == set(report["movement"])
        == set(names) - {"pretrain"}
    )
    for name, row in sampled.items():
        for w in row.values():
            assert len(w["outcomes"]) == 12 and set(w["outcomes"]) <= {0.0, 0.25, 0.5, 0.75, 1.0}
            assert (
                w["ci"][0] <= w["win_rate"] <= w["ci"][1]
                and w["wins"] + w["ties"] + w["losses"] == 12
            )
        assert report["tasks"][name]["sampled"]["n"] == 24
    assert report["checkpoints"]["self_judge"]["start"] == "jsft"
    assert report["checkpoints"]["pretrain"]["start"] is None
    for name, move in report["movement"].items():  # different random models: every reply changes
        assert move["changed_sampled"] > 0.5 and math.isfinite(move["log_ratio"])
    op = report["onpolicy_judge"]
    assert op["policy"] == "jsft" and op["n_pairs"] == 12 and 0 <= op["tie_share"] <= 1
    if op["n_judged"]:
        for other in ("reward_model", "likelihood"):  # order-free judges of the same pairs
            o = op["others"][other]
            assert 0 <= o["acc"] <= 1 and o["consistency"] == 1 and o["n"] == op["n_judged"]
    # cost: what each checkpoint held while training (no params_held recorded: itself)
    for name in names:
        c = report["checkpoints"][name]
        assert c["params_held"] == c["params"] and c["step_s"] is None
    assert "## The judge on on-policy pairs" in markdown and "win vs start [95% CI]" in markdown
    assert "| N | overall | gain over N=1 [95% CI] |" in markdown
    curve = report["rejection"]["curve"]
    assert [c["n"] for c in curve] == [1, 2, 4]
    # the prompts each section scored, by id, for reproduce.py to pair seeds on: both draw from the
    # same stratified order, the curve its first 3
    ids = report["prompt_ids"]
    assert len(set(ids)) == 12 and None not in ids and report["rejection_prompt_ids"] == ids[:3]
    for c in curve:  # the verifier's own best of N is a ceiling for any judge's pick
        assert c["oracle_overall"] >= c["overall"] - 1e-9 and 0 <= c["correct_share"] <= 1
        assert len(c["per_prompt"]) == 3 and c["gain_vs_1"] == pytest.approx(
            c["overall"] - curve[0]["overall"]
        )
        assert c["oracle_overall"] >= c["reward_model_overall"] - 1e-9
    assert report["tokenizer"]["mean_tokens_per_document"]["a_this_tokenizer"]
    seconds = report["meta"]["seconds"]  # wall time per section: disjoint parts of the total
    assert set(seconds) == set(E.SECTIONS) | {"total"} and "## Wall time per section" in markdown
    assert 0 < sum(seconds[s] for s in E.SECTIONS) <= seconds["total"] + 0.01 * len(E.SECTIONS)


def test_judge_section_alone_still_judges_on_policy_pairs(world, tmp_path, monkeypatch):
    """--skip everything but the judge: the on-policy judge still reads the held-out tasks."""
    E.main(
        small_args(world, tmp_path / "eval") + ["--skip", "lm,tokenizer,fim,mc,tasks,win,rejection"]
    )
    report = json.load(open(tmp_path / "eval" / "report.json", encoding="utf-8"))
    assert report["onpolicy_judge"]["n_pairs"] == 12 and report["tasks"] == {}
    assert set(report["judge"]) == {"jsft", "self_judge", "reward_model"}
    # with the task section on, its samples of the JSFT policy are judged, not drawn again
    draws, draw = [], E.sampled_replies
    monkeypatch.setattr(E, "sampled_replies", lambda *a, **k: draws.append(1) or draw(*a, **k))
    E.main(
        small_args(world, tmp_path / "with_tasks") + ["--skip", "lm,tokenizer,fim,mc,win,rejection"]
    )
    reused = json.load(open(tmp_path / "with_tasks" / "report.json", encoding="utf-8"))
    assert reused["tasks"] and reused["onpolicy_judge"] == report["onpolicy_judge"]
    assert len(draws) == len(reused["tasks"])  # one draw per checkpoint, none for the judge


def test_lm_bytes_are_the_validation_text_whatever_the_tokenizer(world):
    """All tokens: the predicted bytes plus the first token's are the text's bytes in meta.json,
    also when the checkpoint's tokenizer differs from data.py's and the documents are re-encoded
    (bpb compares tokenizers)."""
    import tokenizer as T

    root, data_tok = world["root"], world["tok"]
    other = T.Tokenizer(
        str(root / "tokenizer" / "baselines" / "without_morphemes" / "tokenizer.model")
    )
    model = TableModel(torch.zeros(other.vocab_size, other.vocab_size), max_seq_len=128)
    for tok in (data_tok, other):
        lengths = B.token_byte_lengths(tok)
        for g in ("ko", "en", "code"):
            stream = B.val_stream(str(root / "data"), g, tok, data_tok)
            r = B.lm_eval(model, stream, lengths, seq_len=128, batch_size=64)
            assert r["bytes"] + lengths[stream[0]] == world["meta"]["val"]["groups"][g]["bytes"]
            if tok is data_tok:
                assert r["tokens"] + 1 == world["meta"]["val"]["groups"][g]["tokens"]
    assert not filecmp.cmp(other.model_path, data_tok.model_path, shallow=False)


def test_cli_errors_name_the_problem_and_failed_runs_keep_the_old_report(
    world, tmp_path, monkeypatch
):
    with pytest.raises(SystemExit, match=r"nope=/no/such/dir"):
        E.main(["--ckpts", "nope=/no/such/dir"])
    with pytest.raises(SystemExit, match=r"unknown section"):
        E.main(small_args(world, tmp_path) + ["--skip", "lm,typo"])
    with pytest.raises(SystemExit, match=r"rm=.*a reward model, which does not generate"):
        E.main(
            small_args(world, tmp_path) + ["--ckpts", f"rm={world['rm']}", "--skip", "lm,fim,mc"]
        )
    with pytest.raises(
        SystemExit, match=r"--reward-model .*sft: a sft checkpoint, not a reward model"
    ):
        E.main(
            small_args(world, tmp_path)
            + ["--reward-model", world["ckpts"]["sft"], "--skip", "lm,fim,mc"]
        )
    out = tmp_path / "eval"
    E.main(
        small_args(world, out)
        + [
            "--skip",
            "fim,mc,tasks,win,judge,rejection",
            "--ckpts",
            f"pretrain={world['ckpts']['pretrain']}",
        ]
    )
    before = {f: (out / f).read_bytes() for f in ("report.json", "report.md")}
    monkeypatch.setattr(report_md, "to_markdown", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        E.main(small_args(world, out) + ["--skip", "lm,fim,mc,tasks,win,judge,rejection"])
    assert {f: (out / f).read_bytes() for f in before} == before
    assert not [f for f in os.listdir(out) if "tmp" in f]  # no temporary files left behind


def test_defaults_skip_missing_checkpoints_and_find_the_shipped_mc_sets(
    world, tmp_path, monkeypatch, capsys
):
    """From another working directory with only out/sft: the default --ckpts skips the rest with
    notes, and the default --mc finds evals/ beside evaluate.py."""
    (tmp_path / "out").mkdir()
    for name in ("data", "tasks", "tokenizer"):
        os.symlink(world["root"] / name, tmp_path / "out" / name)
    os.symlink(world["ckpts"]["sft"], tmp_path / "out" / "sft")
    monkeypatch.chdir(tmp_path)
    E.main(["--skip", "lm,fim,tasks,win,judge,rejection", "--device", "cpu", "--threads", "1"])
    report = json.load(open(tmp_path / "out" / "eval" / "report.json", encoding="utf-8"))
    assert list(report["checkpoints"]) == ["sft"]
    assert [n.split(" (")[0] for n in report["notes"]] == [
        f"checkpoint {n}" for n in PHASES if n != "sft"
    ]
    assert {f: v["n"] for f, v in report["mc"]["sft"].items()} == {
        "mc_ko.jsonl": 20,
        "mc_en.jsonl": 20,
    }
    assert "note: checkpoint pretrain (out/pretrain) not found: skipped" in capsys.readouterr().out


def test_log_ratio_to_start_equals_a_per_reply_reference(world):
    tok = world["tok"]
    model, _, _ = E.load(world["ckpts"]["sft"], "cpu")
    start, _, _ = E.load(world["ckpts"]["pretrain"], "cpu")
    contexts = [
        [{"role": "user", "content": q}] for q in ("What is 2 plus 3?", "사과는 영어로?", "Hi")
    ]
    replies = E.sampled_replies(model, tok, contexts, k=2, max_new_tokens=6, seed=0, batch_size=4)
    assert [len(r) for r in replies] == [2, 2, 2]
    # as drawn: this tiny model's replies run to the cap (6 tokens) without an end of turn, and
    # gain none; one that ended keeps its own
    assert all(len(r) == 6 and tok.eot_id not in r for per in replies for r in per)
    replies[1][0] = tok.encode("Apple.") + [tok.eot_id]
    assert E.log_ratio_to_start(model, model, tok, contexts, replies) == 0.0

    # one reply at a time, no padding: sum of log-softmax at each token sampled (the end of turn
    # where one was sampled, none added to a reply the length cap cut)
    def logp(m, prompt, reply):
        ids = torch.tensor([prompt + reply])
        with torch.no_grad():
            lp = m(ids)[0].log_softmax(-1)[0]
        return sum(lp[len(prompt) - 1 + j, t].item() for j, t in enumerate(reply))

    expected = []
    for c, per in zip(contexts, replies):
        prompt = tok.render_chat(c, add_generation_prompt=True)[0]
        expected += [logp(model, prompt, r) - logp(start, prompt, r) for r in per]
    got = E.log_ratio_to_start(model, start, tok, contexts, replies, batch_size=4)
    assert got == pytest.approx(sum(expected) / len(expected), abs=1e-4)

    # the likelihood judge picks the reply the model finds likelier, by the same reference, in
    # either order; a text reply reads as its encoding and the end of turn
    end = [tok.eot_id]
    pairs = [tuple(per) for per in replies] + [
        (tok.encode("Five.") + end, tok.encode("Hello hello") + end)
    ]
    ctx = contexts + contexts[:1]
    prompts = [tok.render_chat(c, add_generation_prompt=True)[0] for c in ctx]
    want = [logp(model, p, a) > logp(model, p, b) for p, (a, b) in zip(prompts, pairs)]
    assert len(set(want)) == 2  # both verdicts occur: the check can tell
    judge = E.likelihood_judge(model, tok, batch_size=3)
    out = judge(ctx, pairs)
    assert out["first_order_a"] == out["second_order_a"] == want
    assert out["winners"] == [int(not w) for w in want]
    assert judge(ctx, [(b, a) for a, b in pairs])["first_order_a"] == [not w for w in want]
    assert judge(ctx[-1:], [("Five.", "Hello hello")])["first_order_a"] == want[-1:]
    # one log-probability per reply, in the order given, whatever order the batches run in
    each = [logp(model, p, r) for p, pair in zip(prompts, pairs) for r in pair]
    assert len({round(x, 3) for x in each}) == len(each)  # all different: a swap would show
    got = E.reply_logprobs(model, tok, ctx, [list(pair) for pair in pairs], batch_size=3)
    assert got == pytest.approx(each, abs=1e-4)
    five = logp(model, prompts[-1], tok.encode("Five.") + [tok.eot_id])
    assert E.reply_logprobs(model, tok, ctx[-1:], [["Five."]]) == [pytest.approx(five, abs=1e-4)]
    ended = tok.encode("Five.") + end  # a sample's own stop id is not scored twice
    assert E.reply_logprobs(model, tok, ctx[-1:], [[ended]]) == [pytest.approx(five, abs=1e-4)]
    cut = logp(model, prompts[-1], tok.encode("Five."))  # a reply cut short: no end of turn added
    assert abs(cut - five) > 1e-3
    assert E.reply_logprobs(model, tok, ctx[-1:], [[tok.encode("Five.")]]) == [
        pytest.approx(cut, abs=1e-4)
    ]
    again = E.sampled_replies(start, tok, contexts, k=2, max_new_tokens=6, seed=0, batch_size=4)
    assert (
        E.sampled_replies(start, tok, contexts, k=2, max_new_tokens=6, seed=0, batch_size=4)
        == again
    )


def test_onpolicy_judge_scores_the_judge_against_the_verifier(world):
    import tasks

    tok = world["tok"]
    model, _, _ = E.load(world["ckpts"]["jsft"], "cpu")
    held = [
        json.loads(line)
        for line in open(world["root"] / "tasks" / "eval_tasks.jsonl", encoding="utf-8")
    ]
    task_of = {json.dumps(t["messages"]): t for t in held}

    def verifier_says_a(contexts, pairs):
        return [
            tasks.score(task_of[json.dumps(c)], tok.decode(a))["overall"]
            > tasks.score(task_of[json.dumps(c)], tok.decode(b))["overall"]
            for c, (a, b) in zip(contexts, pairs)
        ]

    def oracle(contexts, pairs, flip=False):
        a = [x != flip for x in verifier_says_a(contexts, pairs)]
        return {"winners": [int(not x) for x in a], "first_order_a": a, "second_order_a": a}

    def position_a(contexts, pairs):  # always the reply shown first: a in one order, b in the other
        return {
            "winners": [0] * len(pairs),
            "first_order_a": [True] * len(pairs),
            "second_order_a": [False] * len(pairs),
        }

    right = E.onpolicy_judge(model, tok, oracle, held, max_new_tokens=8, seed=0)
    assert right["n_pairs"] == len(held) and right["n_judged"] > 0
    assert right["tie_share"] == pytest.approx(1 - right["n_judged"] / len(held))
    assert right["acc"] == right["consistency"] == 1.0
    assert E.onpolicy_judge(model, tok, lambda c, p: oracle(c, p, True), held, 8, 0)["acc"] == 0.0
    biased = E.onpolicy_judge(model, tok, position_a, held, max_new_tokens=8, seed=0)
    assert biased["consistency"] == 0.0 and biased["acc"] == biased["acc_first_order"]
    assert biased["acc_first_order"] + biased["acc_second_order"] == pytest.approx(1.0)
    assert right["names_first"] == 0.5 and biased["names_first"] == 1.0

    # by what separates the pair: a judge that sees correctness only, and names the first reply
    # otherwise
    def correctness_differs(c, a, b):
        t = task_of[json.dumps(c)]
        return (
            tasks.score(t, tok.decode(a))["correctness"]
            != tasks.score(t, tok.decode(b))["correctness"]
        )

    def sees_correctness(contexts, pairs):
        sees = [correctness_differs(c, a, b) for c, (a, b) in zip(contexts, pairs)]
        o, p = oracle(contexts, pairs), position_a(contexts, pairs)
        pick = lambda key: [x if s else y for s, x, y in zip(sees, o[key], p[key])]
        return {key: pick(key) for key in ("winners", "first_order_a", "second_order_a")}

    # both kinds, by construction:
    def planted_pairs(contexts):
        out = []  # gold vs a wrong value, or vs a verbose gold
        for i, c in enumerate(contexts):
            cands = dict(tasks.candidates(task_of[json.dumps(c)], random.Random(i)))
            other = cands.get("wrong_value" if i % 2 else "verbose") or cands[sorted(cands)[0]]
            out.append([tok.encode(cands["gold"]), tok.encode(other)])
        return out

    split = E.onpolicy_judge(
        model,
        tok,
        sees_correctness,
        held,
        max_new_tokens=8,
        seed=0,
        samples=planted_pairs([t["messages"] for t in held]),
    )
    by = split["by_difference"]
    assert set(by) == {"correctness", "surface"}
    assert by["correctness"]["n"] + by["surface"]["n"] == split["n_judged"]
    assert by["correctness"]["acc"] == by["correctness"]["consistency"] == 1.0
    assert by["correctness"]["names_first"] == 0.5
    assert by["surface"]["consistency"] == 0.0 and by["surface"]["names_first"] == 1.0
    n_c = by["correctness"]["n"]
    assert split["consistency"] == pytest.approx(n_c / split["n_judged"])
    # the correctness pairs by family: the odd-numbered prompts' pairs (gold vs a wrong value)
    fam = split["correctness_by_family"]
    wrong = [held[i]["family"] for i in range(1, len(held), 2)]
    wrong = {f: wrong.count(f) for f in wrong}
    assert {f: b["n"] for f, b in fam.items()} == {f: n for f, n in wrong.items()}
    assert [b["n"] for b in fam.values()] == sorted(wrong.values(), reverse=True)
    assert all(b["acc"] == b["consistency"] == 1.0 for b in fam.values())
    for f in {t["family"] for t in held}:  # gold (right) and its wrong-value or verbose twin
        rows = [i for i, t in enumerate(held) if t["family"] == f]
        expect = sum(1 + (i % 2 == 0) for i in rows) / (2 * len(rows))
        assert split["sampled_correct_by_family"][f] == pytest.approx(expect), f
    # a correct share counts right replies, not partial credit (a sorted list one swap off: 0.6)
    s_i = next(i for i, t in enumerate(held) if t["family"] == "sort")
    part = dict(tasks.candidates(held[s_i], random.Random(0)))["partly_right"]
    assert 0 < tasks.score(held[s_i], part)["correctness"] < 1
    pair = [tok.encode(part), tok.encode(part)]
    alone = E.onpolicy_judge(model, tok, oracle, held[s_i : s_i + 1], 8, 0, samples=[pair])
    assert alone["sampled_correct_by_family"] == {"sort": 0.0}
    # ties (identical replies) leave the judged pairs: each family still counts its own pairs
    planted = planted_pairs([t["messages"] for t in held])
    tied = [[p[0], p[0]] if i % 3 == 0 else p for i, p in enumerate(planted)]
    some = E.onpolicy_judge(model, tok, sees_correctness, held, 8, 0, samples=tied)
    wrong = [held[i]["family"] for i in range(1, len(held), 2) if i % 3]
    assert {f: b["n"] for f, b in some["correctness_by_family"].items()} == {
        f: wrong.count(f) for f in wrong
    }
    # a judge wrong on one family's pairs only: that family's accuracy 0, the others' 1
    odd = next(iter(fam))

    def wrong_on_odd(contexts, pairs):
        o, x = oracle(contexts, pairs), oracle(contexts, pairs, True)
        flip = [task_of[json.dumps(c)]["family"] == odd for c in contexts]
        return {k: [b if f else a for f, a, b in zip(flip, o[k], x[k])] for k in o}

    one = E.onpolicy_judge(model, tok, wrong_on_odd, held, 8, 0, samples=planted)
    assert {f: b["acc"] for f, b in one["correctness_by_family"].items()} == {
        f: float(f != odd) for f in fam
    }
    pos = E.onpolicy_judge(
        model, tok, position_a, held, 8, 0, samples=planted_pairs([t["messages"] for t in held])
    )
    assert all(b["consistency"] == 0.0 for b in pos["correctness_by_family"].values())
    text = "\n".join(report_md.onpolicy_markdown(dict(split, policy="jsft")))
    assert f"| all | {split['n_judged']} |" in text and f"| correctness | {n_c} | 1.000 |" in text
    f, b = next(iter(fam.items()))
    share = split["sampled_correct_by_family"][f]
    assert f"| {f} | {share:.3f} | {b['n']} | 1.000 | 1.000 | 0.500 |" in text
    # other judges of the same pairs: overall, then per kind of pair
    kinds = {"correctness": {"acc": 0.25}, "surface": {"acc": 0.75}}
    lk = dict(acc=0.5, acc_first_order=0.4, acc_second_order=0.6, consistency=1.0)
    lk["by_difference"] = kinds
    text = "\n".join(report_md.onpolicy_markdown(dict(split, policy="jsft", others={"lk": lk})))
    assert "| lk | 0.500 | 0.250 | 0.750 | 0.400 | 0.600 | 1.000 |" in text
