"""JSFT (jsft.py): judge templates, judgment examples in token space, the judge's order-averaged
formula with principle vote and tie rule (against a stub model whose logits the test sets), and a
tiny JSFT run that learns to judge held-out fixture pairs (tests/fixtures/jsft, see
make_fixture.py)."""

import copy
import dataclasses
import json
import os
import random

import pytest
import torch

import jsft
from conftest import logits_read_at
from jsft import (
    JUDGE_TEMPLATES,
    judge,
    judge_accuracy,
    judge_prompt,
    judgment_example,
    judgment_examples,
    mix_units,
)
from model import Transformer, config_from_preset
from pretrain import load_model, save_checkpoint
from readers import PreferencePair, read_preferences, validate_templates
from sft import collate, length_grouped_batches

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "jsft")
EN_CONTEXT = [{"role": "user", "content": "What is 7 plus 5?"}]
KO_CONTEXT = [
    {"role": "user", "content": "7 더하기 5는 얼마인가요?"},
    {"role": "assistant", "content": "12입니다."},
    {"role": "user", "content": "그럼 12 빼기 4는요?"},
]


def user_text(template, context, a, b, lang):
    return template["user"].format(
        context=jsft.context_text(context, lang), response_a=a, response_b=b
    )


# ----------------------------------------------------------------------------- templates
def test_shipped_templates_are_valid_and_cover_both_languages():
    validate_templates(JUDGE_TEMPLATES)
    assert set(JUDGE_TEMPLATES) == {"en", "ko"}
    assert (
        set(JUDGE_TEMPLATES["en"])
        == set(JUDGE_TEMPLATES["ko"])
        >= {"overall", "correctness", "language", "concision", "ending", "helpfulness"}
    )
    validate_templates(JUDGE_TEMPLATES["ko"])  # one language's {principle: ...} is accepted too


@pytest.mark.parametrize(
    "field, value, complaint",
    [
        (
            "user",
            "{context} {response_a}",
            r"ko/ending\.user: placeholder \{response_b\} must appear exactly once",
        ),
        (
            "user",
            "{context} {response_a} {response_b} {response_a}",
            r"ko/ending\.user: placeholder \{response_a\}",
        ),
        (
            "user",
            "{context} {response_a} {response_b} {score}",
            r"ko/ending\.user: unknown placeholder \{score\}",
        ),
        (
            "user",
            "{context} {response_a!r} {response_b}",
            r"ko/ending\.user: write the placeholder as \{response_a\}",
        ),
        ("user", "{context} {response_a} {response_b} {", r"ko/ending\.user: .*literal brace"),
        (
            "system",
            "Judge {context}.",
            r"ko/ending\.system: placeholder \{context\} belongs in the user template",
        ),
        ("assistant", "Better: Response ", r"ko/ending\.assistant: .*must not end in whitespace"),
        ("assistant", None, r"ko/ending: field 'assistant' must be a string"),
    ],
)
def test_validate_templates_names_language_principle_and_field(field, value, complaint):
    broken = copy.deepcopy(JUDGE_TEMPLATES)
    broken["ko"]["ending"][field] = value
    with pytest.raises(ValueError, match=complaint):
        validate_templates(broken)


def test_literal_braces_are_allowed_when_escaped(small_tokenizer):
    templates = {
        "en": {
            "overall": {
                "system": "Judge {{fairly}}.",
                "user": "{{ctx}} {context} {response_a} {response_b}",
                "assistant": "Response",
            }
        }
    }
    validate_templates(templates)
    ids = judge_prompt(small_tokenizer, EN_CONTEXT, "a", "b", templates=templates)
    assert "{ctx} User: What is 7 plus 5?" in small_tokenizer.decode(
        ids
    ) and "Judge {fairly}." in small_tokenizer.decode(ids)


# ----------------------------------------------------------------------------- prompts in token
# space
@pytest.mark.parametrize("context, lang", [(EN_CONTEXT, "en"), (KO_CONTEXT, "ko")])
def test_judge_prompt_is_the_chat_rendering_with_the_assistant_prefix(
    small_tokenizer, context, lang
):
    tok = small_tokenizer
    a, b = "7 plus 5 is 12.", "7 더하기 5는 12입니다."
    ids = judge_prompt(tok, context, a, b, "correctness")
    t = JUDGE_TEMPLATES[lang]["correctness"]
    expected, _ = tok.render_chat(
        [
            {"role": "system", "content": t["system"]},
            {"role": "user", "content": user_text(t, context, a, b, lang)},
        ],
        add_generation_prompt=True,
    )
    expected += tok.encode(t["assistant"])
    # same conversation, same control tokens in the same places; the text segments are encoded one
    # by one
    assert tok.decode(ids, show_special=True) == tok.decode(expected, show_special=True)
    assert [i for i in ids if i < 11] == [i for i in expected if i < 11]
    system_part, _ = tok.render_chat([{"role": "system", "content": t["system"]}])
    assert ids[: len(system_part)] == system_part
    assert ids[-len(tok.encode(t["assistant"])) - 2 :] == [
        tok.eot_id,
        tok.assistant_id,
    ] + tok.encode(t["assistant"])
    role = jsft.ROLE_NAMES[lang]["user"]
    assert f"{role}: {context[-1]['content']}" in tok.decode(ids)


def test_language_follows_the_context_unless_given(small_tokenizer):
    tok = small_tokenizer
    assert jsft.context_lang(KO_CONTEXT) == "ko" and jsft.context_lang(EN_CONTEXT) == "en"
    assert "[대화]" in tok.decode(judge_prompt(tok, KO_CONTEXT, "a", "b"))
    forced = tok.decode(judge_prompt(tok, KO_CONTEXT, "a", "b", lang="en"))
    assert (
        "[Conversation]" in forced
        and "User: 그럼 12 빼기 4는요?" in forced
        and "Assistant: 12입니다." in forced
    )
    with pytest.raises(ValueError, match="no en judge template for principle 'kindness'"):
        judge_prompt(tok, EN_CONTEXT, "a", "b", "kindness")


def contains(seq, sub):
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_id_responses_are_spliced_never_re_encoded(small_tokenizer):
    tok = small_tokenizer
    text = "7 plus 5 is 12."
    # a valid spelling of the text that is not encode(text)
    odd = [i for ch in text for i in tok.encode(ch)]
    assert odd != tok.encode(text) and tok.decode(odd) == text
    # a sample as generated, stop id included
    ids = judge_prompt(tok, EN_CONTEXT, odd + [tok.eot_id], "No.")
    assert contains(ids, odd) and not contains(ids, odd + [tok.eot_id])
    assert judge_prompt(tok, EN_CONTEXT, tok.encode(text), "No.") == judge_prompt(
        tok, EN_CONTEXT, text, "No."
    )


# ----------------------------------------------------------------------------- training examples
def test_both_orders_mirror_the_target_and_only_the_verdict_carries_loss(small_tokenizer):
    tok = small_tokenizer
    pair = PreferencePair(EN_CONTEXT, "7 plus 5 is 12.", "7 plus 5 is 13.")
    (ids1, mask1), (ids2, mask2) = judgment_examples(tok, [pair])
    for ids, mask, first, second, verdict in (
        (ids1, mask1, pair.chosen, pair.rejected, tok.verdict_a_id),
        (ids2, mask2, pair.rejected, pair.chosen, tok.verdict_b_id),
    ):
        # exactly what the judge reads at inference
        prompt = judge_prompt(tok, EN_CONTEXT, first, second)
        assert ids == prompt + [verdict, tok.eot_id]
        assert mask == [0] * len(prompt) + [1, 1]
        batch = collate([(ids, mask)], tok.pad_id)
        learned = batch["loss_mask"][0].nonzero().flatten().tolist()
        # the prompt's last position predicts the verdict
        assert learned == [len(prompt) - 1, len(prompt)]
        assert (
            batch["x"][0, len(prompt) - 1] == prompt[-1]
            and batch["y"][0, len(prompt) - 1] == verdict
        )
    assert tok.decode([tok.verdict_a_id]) == " A" and tok.decode([tok.verdict_b_id]) == " B"


def test_rationale_variant_puts_the_verdict_first_and_learns_the_rationale(small_tokenizer):
    tok = small_tokenizer
    pair = PreferencePair(
        EN_CONTEXT, "12.", "13.", "correctness", "The answer is correct.", "The answer is wrong."
    )
    (ids1, mask1), (ids2, mask2) = judgment_examples(tok, [pair], rationale=True)
    for ids, mask, first, second, verdict, why in (
        (
            ids1,
            mask1,
            "12.",
            "13.",
            tok.verdict_a_id,
            ".\nResponse A: The answer is correct.\nResponse B: The answer is wrong.",
        ),
        (
            ids2,
            mask2,
            "13.",
            "12.",
            tok.verdict_b_id,
            ".\nResponse A: The answer is wrong.\nResponse B: The answer is correct.",
        ),
    ):
        prompt = judge_prompt(tok, EN_CONTEXT, first, second, "correctness")
        target = [verdict] + tok.encode(why) + [tok.eot_id]
        assert ids == prompt + target and mask == [0] * len(prompt) + [1] * len(target)
    assert judgment_examples(tok, [pair], rationale=False)[0][0][-2:] == [
        tok.verdict_a_id,
        tok.eot_id,
    ]


def test_long_examples_lose_old_context_first_and_keep_their_target(small_tokenizer):
    tok = small_tokenizer
    long_context = [
        {"role": "user", "content": "Tell me about apples. " * 30},
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "What is 7 plus 5?"},
    ]
    full, _ = judgment_example(tok, long_context, "12.", "13.", 1)
    ids, mask = judgment_example(tok, long_context, "12.", "13.", 1, max_len=len(full) - 40)
    assert (
        len(ids) == len(full) - 40 and ids[-2:] == [tok.verdict_b_id, tok.eot_id] and sum(mask) == 2
    )
    text = tok.decode(ids)
    assert "What is 7 plus 5?" in text and "12." in text and "13." in text
    with pytest.raises(ValueError, match="template alone is longer"):
        judgment_example(tok, long_context, "12.", "13.", 0, max_len=20)
    with pytest.raises(AssertionError, match="verdict must be 0"):
        judgment_example(tok, EN_CONTEXT, "12.", "13.", "A")


def fake_examples(tag, n, length=lambda i: 5):
    return [([i] * length(i), [tag] * length(i)) for i in range(n)]


def test_mix_reaches_the_asked_fraction_keeps_pairs_together_and_cuts_nothing():
    sft, judged = fake_examples(0, 30), fake_examples(1, 20)  # 20 judgment examples = 10 pairs
    for fraction in (0.25, 0.5, 0.8):
        units, counts = mix_units(sft, judged, fraction, seed=1)
        assert counts["judgments"] / (counts["sft"] + counts["judgments"]) == pytest.approx(
            fraction, abs=0.02
        )
        flat = [ex for u in units for ex in u]
        assert counts == {
            "sft": sum(ex[1][0] == 0 for ex in flat),
            "judgments": sum(ex[1][0] == 1 for ex in flat),
        }
        assert all(len(u) == 1 for u in units if u[0][1][0] == 0)
        assert all(
            u in [judged[i : i + 2] for i in range(0, 20, 2)] for u in units if u[0][1][0] == 1
        )
        assert all(ex in flat for ex in sft + judged)  # the short side is repeated, nothing dropped
    assert mix_units(sft, judged, 0.0)[1] == {"sft": 30, "judgments": 0}
    assert mix_units(sft, judged, 1.0)[1] == {"sft": 0, "judgments": 20}
    with pytest.raises(ValueError, match="judge-fraction"):
        mix_units(sft, judged, 1.5)
    with pytest.raises(AssertionError, match="both orders"):
        mix_units(sft, judged[:-1], 0.5)


def test_unit_batches_keep_both_orders_together_within_the_token_budget():
    rng = random.Random(0)
    lengths = [rng.randint(5, 60) for _ in range(200)]
    sft = fake_examples(0, 100, lambda i: lengths[i])
    judged = [ex for i in range(50) for ex in fake_examples(1, 2, lambda _: lengths[100 + i])]
    units, _ = mix_units(sft, judged, 0.5)
    for epoch in (0, 1):
        batches = length_grouped_batches(units, 256, seed=3, epoch=epoch)
        # every unit once per epoch
        assert sorted(u for b in batches for u in b) == list(range(len(units)))
        for b in batches:
            rows = [ex for u in b for ex in units[u]]
            assert len(b) == 1 or len(rows) * max(len(ids) - 1 for ids, _ in rows) <= 256
    assert length_grouped_batches(units, 256, 3, 0) == length_grouped_batches(units, 256, 3, 0)
    assert length_grouped_batches(units, 256, 3, 0) != length_grouped_batches(units, 256, 3, 1)


# ----------------------------------------------------------------------------- the judge, with a
# stub model
class StubJudge(torch.nn.Module):
    """Causal stand-in for the model: at a position whose prefix is a known judge prompt it gives
    the verdict logits the test chose; everywhere else (padding, earlier positions) it strongly
    prefers the wrong letter, so reading any other position than a row's last real one shows up."""

    def __init__(self, vocab_size, a_id, b_id, table):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.vocab_size, self.a_id, self.b_id, self.table = vocab_size, a_id, b_id, table
        self.calls = 0

    def forward(self, idx, targets=None, loss_mask=None, last_only=False):
        self.calls += 1
        logits = torch.zeros(*idx.shape, self.vocab_size)
        logits[..., self.b_id] = 50.0  # "B", unless the prefix is a known prompt
        for r, row in enumerate(idx.tolist()):
            for t in range(len(row)):
                key = tuple(row[: t + 1])
                if key in self.table:
                    logits[r, t, self.b_id] = 0.0
                    logits[r, t, self.a_id] = self.table[key]  # p_A = sigmoid(logit)
        return logits_read_at(logits, last_only), None  # as Transformer.forward reads it


def p_logit(p):
    return float(torch.logit(torch.tensor(p, dtype=torch.float64)))


def stub_for(tok, cases, principles):
    """cases: [(context, a, b, {principle: (p_A for (a, b), p_A for (b, a))})] -> a stub model."""
    table = {}
    for context, a, b, probs in cases:
        for principle in principles:
            p_ab, p_ba = probs[principle]
            table[tuple(judge_prompt(tok, context, a, b, principle))] = p_logit(p_ab)
            table[tuple(judge_prompt(tok, context, b, a, principle))] = p_logit(p_ba)
    return StubJudge(tok.vocab_size, tok.verdict_a_id, tok.verdict_b_id, table)


def expected_verdict(probs, principles):
    """The rule of DESIGN.md §3, written out independently: score_a = (p_A(a,b) + p_B(b,a)) / 2,
    majority vote over principles, a tie going to the higher mean score."""
    scores = [(probs[p][0] + (1 - probs[p][1])) / 2 for p in principles]
    votes_a, votes_b = sum(s > 0.5 for s in scores), sum(s < 0.5 for s in scores)
    mean = sum(scores) / len(scores)
    winner = (0 if votes_a > votes_b else 1) if votes_a != votes_b else (0 if mean >= 0.5 else 1)
    return mean, winner


def test_judge_averages_both_orders_with_one_principle(small_tokenizer):
    tok = small_tokenizer
    cases = [  # (p_A(a, b), p_A(b, a)); every (a, b) differs, so the stub's prompts do not collide
        (EN_CONTEXT, "12.", "13.", {"overall": (0.9, 0.3)}),  # consistent: a wins both ways
        # biased toward A; averaged b wins
        (EN_CONTEXT, "It is 11.", "It is 12.", {"overall": (0.6, 0.95)}),
        # biased toward A; averaged a wins (0.55)
        (KO_CONTEXT, "8입니다.", "eight.", {"overall": (0.7, 0.6)}),
        (KO_CONTEXT, "8.", "9입니다.", {"overall": (0.2, 0.8)}),  # consistent: b wins both ways
    ]
    model = stub_for(tok, cases, ("overall",))
    out = judge(model, tok, [c[0] for c in cases], [(c[1], c[2]) for c in cases], batch_size=3)
    for k, (_, _, _, probs) in enumerate(cases):
        mean, winner = expected_verdict(probs, ("overall",))
        assert out["score_a"][k] == pytest.approx(mean, abs=1e-5)
        assert out["winners"][k] == winner
        assert out["first_order_a"][k] == (probs["overall"][0] > 0.5)
        assert out["second_order_a"][k] == (probs["overall"][1] < 0.5)
    assert out["winners"] == [0, 1, 0, 1]
    assert model.calls == 3  # 8 prompts in batches of 3: one forward per batch, no generate loop


def test_judge_principles_vote_and_a_tie_goes_to_the_higher_mean(small_tokenizer):
    tok = small_tokenizer
    principles = ("correctness", "language", "concision")
    two = ("correctness", "language")
    cases = [
        # 2 votes for a (barely) against 1 strong vote for b: the majority wins although the mean
        # favours b
        (
            EN_CONTEXT,
            "12.",
            "13.",
            {"correctness": (0.55, 0.45), "language": (0.55, 0.45), "concision": (0.0001, 0.9999)},
        ),
        # 2 votes for b against 1 for a
        (
            EN_CONTEXT,
            "x.",
            "y.",
            {"correctness": (0.9, 0.1), "language": (0.3, 0.7), "concision": (0.4, 0.6)},
        ),
    ]
    out = judge(
        stub_for(tok, cases, principles),
        tok,
        [c[0] for c in cases],
        [(c[1], c[2]) for c in cases],
        principles,
    )
    assert out["winners"] == [0, 1]
    for k, case in enumerate(cases):
        mean, winner = expected_verdict(case[3], principles)
        assert out["winners"][k] == winner and out["score_a"][k] == pytest.approx(mean, abs=1e-5)
    assert out["score_a"][0] < 0.5  # so the first case really was decided by the vote, not the mean
    ties = [  # one vote each: the higher mean decides
        # mean 0.675 -> a
        (EN_CONTEXT, "12.", "13.", {"correctness": (0.95, 0.05), "language": (0.4, 0.6)}),
        # mean 0.35 -> b
        (EN_CONTEXT, "11.", "12.", {"correctness": (0.6, 0.4), "language": (0.1, 0.9)}),
    ]
    out = judge(
        stub_for(tok, ties, two), tok, [c[0] for c in ties], [(c[1], c[2]) for c in ties], two
    )
    assert out["winners"] == [0, 1]
    assert out["score_a"] == pytest.approx([expected_verdict(c[3], two)[0] for c in ties], abs=1e-5)
    assert [[round(s, 4) for s in row] for row in out["principle_scores"]] == [
        [0.95, 0.4],
        [0.6, 0.1],
    ]


def test_judge_accuracy_reports_position_bias_and_consistency(small_tokenizer):
    tok = small_tokenizer
    pairs = [PreferencePair(EN_CONTEXT, f"{n} is right.", f"{n} is wrong.") for n in range(6)]
    # always says A with confidence 0.8 except on pairs 0 and 1, which it judges right in both
    # orders
    cases = [
        (p.context, p.chosen, p.rejected, {"overall": (0.9, 0.1) if k < 2 else (0.8, 0.8)})
        for k, p in enumerate(pairs)
    ]
    cases += [
        (p.context, p.rejected, p.chosen, {"overall": (0.1, 0.9) if k < 2 else (0.8, 0.8)})
        # the same prompts, whichever reply judge_accuracy calls a
        for k, p in enumerate(pairs)
    ]
    result = judge_accuracy(stub_for(tok, cases, ("overall",)), tok, pairs)
    assert result["n"] == 6
    assert result["acc_chosen_first"] == 1.0 and result["acc_chosen_second"] == pytest.approx(2 / 6)
    assert result["consistency"] == pytest.approx(2 / 6)
    # order-averaged, the biased pairs are exact ties (0.8 + 0.2) / 2: they must not count as right
    # for free, so judge_accuracy shows chosen as a or as b in turn and ties land on each side
    # equally
    assert result["acc"] == pytest.approx((2 + 2) / 6)
    assert set(result["by_lang"]) == {"en"} and result["by_lang"]["en"]["n"] == 6


# ----------------------------------------------------------------------------- a tiny JSFT run
def test_tiny_jsft_learns_to_judge_held_out_fixture_pairs(small_tokenizer, tmp_path):
    tok = small_tokenizer
    torch.manual_seed(0)
    cfg = config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=192)
    init = str(tmp_path / "init")
    save_checkpoint(
        init,
        Transformer(cfg).state_dict(),
        {"phase": "test", "model": dataclasses.asdict(cfg)},
        tokenizer_path=tok.model_path,
    )
    held_out = read_preferences(os.path.join(FIX, "prefs_eval.jsonl"))
    untrained = judge_accuracy(load_model(init)[0], tok, held_out)
    out = str(tmp_path / "jsft")
    jsft.main(
        [
            "--init-from",
            init,
            "--out-dir",
            out,
            "--data",
            os.path.join(FIX, "chats.jsonl"),
            "--prefs",
            os.path.join(FIX, "prefs_train.jsonl"),
            "--eval-prefs",
            os.path.join(FIX, "prefs_eval.jsonl"),
            "--judge-fraction",
            "0.9",
            "--steps",
            "250",
            "--lr",
            "3e-3",
            "--min-lr",
            "3e-4",
            "--warmup-steps",
            "10",
            "--seq-len",
            "192",
            "--max-tokens",
            "1024",
            "--val-fraction",
            "0",
            "--device",
            "cpu",
            "--lm-mix",
            "0",
        ]
    )
    with open(os.path.join(out, "judge_eval.json"), encoding="utf-8") as fh:
        result = json.load(fh)
    assert result["n"] == len(held_out) == 60
    # Chance for the mean of the two orders' accuracies is 0.5 whatever a judge's position bias
    # (always "A" scores 1.0 and 0.0). The order-averaged accuracy alone is no proof: an untrained
    # model that leans the same way on every pair of one flaw type can score far from 0.5 on a
    # fixture this small.
    per_order = lambda r: (r["acc_chosen_first"] + r["acc_chosen_second"]) / 2
    assert per_order(result) >= 0.7 and result["acc"] >= 0.75, (untrained, result)
    assert per_order(result) >= per_order(untrained) + 0.15, (untrained, result)
    # the checkpoint is a normal one and judges the same way when loaded back; the final metrics row
    # logs it
    again = judge_accuracy(load_model(out)[0], tok, held_out)
    assert again["acc"] == pytest.approx(result["acc"])
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as fh:
        last = [json.loads(line) for line in fh][-1]
    assert last["judge_acc"] == pytest.approx(result["acc"]) and "judge_consistency" in last


def test_sampled_pairs_are_the_models_own_replies_ranked_by_the_verifier(small_tokenizer):
    import tasks

    tok = small_tokenizer
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128))
    rows = [{"messages": t["messages"], "task": t} for t in tasks.build_world(0)["train"][::200]]
    pairs, ties = jsft.sampled_pairs(model, tok, rows, seed=1, max_new_tokens=10, batch_size=6)
    assert len(pairs) + ties == len(rows) and pairs
    task_of = {json.dumps(r["messages"]): r["task"] for r in rows}
    for p in pairs:  # chosen beats rejected by the verifier
        t = task_of[json.dumps(p.context)]
        assert tasks.score(t, p.chosen)["overall"] > tasks.score(t, p.rejected)["overall"]
    again, _ = jsft.sampled_pairs(model, tok, rows, seed=1, max_new_tokens=10, batch_size=6)
    assert again == pairs  # seeded


def test_judge_reads_a_shared_conversation_once_with_the_verdicts_of_each_prompt_alone(
    small_tokenizer,
):
    """A conversation's prompts under one principle (both orders, a tournament's matches) share
    the judge's system prompt and the conversation: it runs once into the KV cache. The verdicts
    are those of each prompt read alone by a full forward, written out here; an identical pair,
    alone in its conversation (both prompts the same: all but the last token shared), too."""
    tok = small_tokenizer
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=192))
    with torch.no_grad():  # larger weights: verdicts far from 0.5 and from one another
        for w in model.parameters():
            w.mul_(8.0 if w.dim() == 2 else 1.0)
    model.eval()
    contexts = [EN_CONTEXT] * 3 + [KO_CONTEXT, [{"role": "user", "content": "And 6 plus 6?"}]]
    pairs = [("12.", "13."), ("13.", "It is 12."), ("It is 12.", "12."), ("8입니다.", "eight.")]
    pairs += [("Twelve.", "Twelve.")]
    principles = ("overall", "correctness")
    fed = []  # token positions each forward computes
    model.embed_tokens.register_forward_hook(lambda m, args, out: fed.append(args[0].numel()))
    out = judge(model, tok, contexts, pairs, principles, batch_size=32)  # one batch
    shared_fed, fed[:] = sum(fed), []

    class NoCache(torch.nn.Module):  # the same model without a KV cache: every prompt in full
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, idx, last_only=False):
            return self.inner(idx, last_only=last_only)

    plain = judge(NoCache(), tok, contexts, pairs, principles, batch_size=5)
    prompts = []
    for k, (context, (a, b)) in enumerate(zip(contexts, pairs)):
        for j, principle in enumerate(principles):
            p_a = []
            for x, y in ((a, b), (b, a)):
                prompts.append(judge_prompt(tok, context, x, y, principle))
                with torch.no_grad():
                    logits, _ = model(torch.tensor([prompts[-1]]))
                ab = logits[0, -1, [tok.verdict_a_id, tok.verdict_b_id]].softmax(-1)
                p_a.append(ab[0].item())
            want = (p_a[0] + 1.0 - p_a[1]) / 2  # p_A(a, b) and p_B(b, a), averaged
            assert out["principle_scores"][k][j] == pytest.approx(want, abs=1e-5), (k, j)
    # each (conversation, principle)'s common prefix ran once (left-padded to the longest), the
    # rest of each prompt after it (right-padded): all but its last token, for the identical pair
    groups = {}
    for i, p in enumerate(prompts):  # i // 4: the pair, i // 2 % 2: the principle
        groups.setdefault((json.dumps(contexts[i // 4]), i // 2 % 2), []).append(p)
    common = {}
    for key, group in groups.items():
        n = 0
        while all(len(p) > n and p[n] == group[0][n] for p in group):
            n += 1
        common[key] = group[0][: min(n, min(map(len, group)) - 1)]
    heads = {tuple(h) for h in common.values()}
    rest = max(len(p) - len(common[k]) for k, group in groups.items() for p in group)
    assert shared_fed == len(heads) * max(map(len, heads)) + len(prompts) * rest
    assert shared_fed < 0.7 * sum(fed)  # the full prompts, in batches of 5
    flat = [x for row in out["principle_scores"] for x in row]
    assert len({round(x, 4) for x in flat}) > 5  # they differ
    assert [x for row in plain["principle_scores"] for x in row] == pytest.approx(flat, abs=1e-5)


def test_judge_an_exact_tie_goes_to_a(small_tokenizer):
    """p_A = p_B = 0.5 in both orders: no principle votes, the mean is exactly 0.5, and a wins."""
    tok = small_tokenizer
    cases = [
        (EN_CONTEXT, "12.", "13.", {"overall": (0.5, 0.5)}),
        (EN_CONTEXT, "It is 13.", "It is 12.", {"overall": (0.5, 0.5)}),
    ]
    model = stub_for(tok, cases, ("overall",))
    out = judge(model, tok, [c[0] for c in cases], [(c[1], c[2]) for c in cases])
    assert out["score_a"] == [0.5, 0.5] and out["winners"] == [0, 0]
