"""chat.py's self-rejection (SELF-JUDGE §3.3, `--best-of N`): the knockout tournament, best_of_n on
the sampled replies, and the CLI's one-shot and file modes. The fixture policy and the stub judges
are test_self_judge.py's (its module fixture `world` is built again for this module); the plain
reply against generate() here, the one-shot CLI with sft.py (test_sft.py) and on a kill-left save
(test_checkpoints.py)."""

import json
import math
import os

import pytest
import torch

import chat
import jsft
import self_judge as SJ
import test_self_judge
from readers import read_prompts
from test_self_judge import CAP, FIXTURES, contract_judge, fresh_policy, stub_judge

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
world = test_self_judge.world  # its module fixture: a tokenizer, a chat-tuned tiny policy, prompts


# ----------------------------------------------------------------------------- the tournament
def rank_judge(calls):
    """Candidates are numbers; the larger wins. Records each round's pairs."""

    def judge_pairs(contexts, pairs):
        calls.append(list(zip(contexts, pairs)))
        return [0 if a > b else 1 for a, b in pairs]

    return judge_pairs


def test_tournament_returns_the_best_for_any_n_with_n_minus_1_judgments():
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        # N = 1..9 in one call
        candidates = [torch.randperm(n, generator=g).tolist() for n in range(1, 10)]
        contexts = [f"context {i}" for i in range(len(candidates))]
        calls = []
        winners = chat.tournament(contexts, candidates, rank_judge(calls), seed)
        assert [c[w] for c, w in zip(candidates, winners)] == [n - 1 for n in range(1, 10)]
        for i, c in enumerate(candidates):
            assert sum(ctx == contexts[i] for round_ in calls for ctx, _ in round_) == len(c) - 1
        assert len(calls) == math.ceil(math.log2(9))  # one batched judge call per round


def test_tournament_is_seeded():
    candidates = [list(range(8))] * 3
    rounds = lambda seed: (
        calls := [],
        chat.tournament(["c"] * 3, candidates, rank_judge(calls), seed),
        calls,
    )[2]
    assert rounds(5) == rounds(5) and rounds(5) != rounds(6)  # the bracket is a seeded shuffle

    def rock_paper_scissors(contexts, pairs):  # intransitive: the winner depends on the bracket
        return [0 if (a - b) % 3 == 1 else 1 for a, b in pairs]

    winners = [
        chat.tournament(["c"], [[0, 1, 2]], rock_paper_scissors, seed)[0] for seed in range(30)
    ]
    assert winners == [
        chat.tournament(["c"], [[0, 1, 2]], rock_paper_scissors, seed)[0] for seed in range(30)
    ]
    assert len(set(winners)) == 3
    with pytest.raises(ValueError, match="one 0/1 per pair"):
        chat.tournament(["c"], [[0, 1]], lambda c, p: [2], 0)


# ----------------------------------------------------------------------------- best of N
def test_best_of_n_returns_the_judge_favourite_of_the_samples(world):
    tok, policy = world["tok"], world["policy"]
    contexts = world["eval"][:5]
    key = lambda ids: (-len(ids), ids)  # a strict total order over distinct samples

    def strict_judge(ctxs, pairs):
        return {
            "winners": [0 if key(a) > key(b) else 1 for a, b in pairs],
            "score_a": [0.5] * len(pairs),
        }

    for n in (1, 2, 5):
        best = chat.best_of_n(
            policy, None, tok, contexts, n, max_new_tokens=CAP, seed=11, judge_fn=strict_judge
        )
        samples = SJ.sample_responses(policy, tok, contexts, n, CAP, seed=11)
        assert best == [max(s, key=key) for s in samples]


def test_best_of_n_with_the_real_judge_returns_one_of_the_samples(world):
    """Self-rejection proper: the policy judges its own samples with jsft.judge."""
    if not hasattr(jsft, "judge"):
        pytest.skip("jsft.judge not written yet")
    tok, policy = world["tok"], fresh_policy(world)
    contexts = world["eval"][:4]
    best = chat.best_of_n(policy, policy, tok, contexts, 3, max_new_tokens=CAP, seed=4)
    assert all(
        b in s for b, s in zip(best, SJ.sample_responses(policy, tok, contexts, 3, CAP, seed=4))
    )
    assert policy.training  # sampling and judging restore the mode they found


# ----------------------------------------------------------------------------- CLI
def test_cli_best_of_answers_a_prompt_and_a_file(world, tmp_path, monkeypatch, capsys):
    judged_by = []
    monkeypatch.setattr(jsft, "judge", contract_judge(judged_by), raising=False)
    run = [
        "--best-of",
        "3",
        "--ckpt",
        world["ckpt"],
        "--max-new-tokens",
        str(CAP),
        "--device",
        "cpu",
    ]
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"prompt": "What is 2 plus 2?"}) + "\n")
    capsys.readouterr()
    chat.main(run + ["--prompts", str(one)])  # the file mode: JSON lines {"prompt", "response"}
    (line,) = capsys.readouterr().out.strip().splitlines()
    assert json.loads(line)["prompt"] == "What is 2 plus 2?"
    assert judged_by  # N > 1: the checkpoint judged its samples
    # chat.py's best-of defaults: temperature 1, top-p 0.9, seed 0 (the old self_judge.py
    # --best-of drew with its training seed 1337 and 48 new tokens)
    tok = world["tok"]
    context = [{"role": "user", "content": "What is 2 plus 2?"}]
    (winner,) = chat.best_of_n(
        world["policy"], None, tok, [context], 3, CAP, 1.0, 0.9, 0, judge_fn=stub_judge
    )
    assert json.loads(line)["response"] == tok.decode(winner)
    # one-shot: the same winner, as plain text
    chat.main(run + ["--prompt", "What is 2 plus 2?"])
    assert capsys.readouterr().out == tok.decode(winner) + "\n"
    # a file of several prompts (every readers.read_prompts layout): one line each, in order
    path = os.path.join(FIXTURES, "prompts.jsonl")
    chat.main(run + ["--prompts", path])
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["prompt"] for r in rows] == [c[-1]["content"] for c in read_prompts(path)]


def test_plain_reply_streams_the_greedy_or_sampled_turn_generate_gives(world):
    """reply() without --best-of: the streamed pieces join to the returned text, which is the
    decoded generate() of the rendered conversation up to (not including) <|endofturn|>; a
    conversation that fills the context is refused with what to do."""
    from model import generate

    policy, tok = world["policy"], world["tok"]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2 plus 2?"},
    ]
    ids, _ = tok.render_chat(messages, add_generation_prompt=True)
    for temperature, top_p in ((0.0, None), (1.0, 0.9)):
        pieces = []
        text = chat.reply(
            policy, tok, messages, CAP, temperature, top_p, seed=3, stream=pieces.append
        )
        generator = torch.Generator().manual_seed(3)
        (drawn,) = generate(
            policy,
            [ids],
            CAP,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
            stop_ids=(tok.eot_id,),
            pad_id=tok.pad_id,
        )
        assert text == tok.decode([t for t in drawn if t != tok.eot_id]) and text
        assert "".join(pieces) == text and all(pieces)
    long = [{"role": "user", "content": "word " * policy.cfg.max_seq_len}]
    with pytest.raises(ValueError, match=r"the conversation is \d+ tokens.*/reset"):
        chat.reply(policy, tok, long)


def test_help_lists_the_knobs(capsys):
    with pytest.raises(SystemExit):
        chat.main(["--help"])
    text = capsys.readouterr().out
    for flag in (
        "--best-of",
        "--prompts",
        "--prompt",
        "--principles",
        "--temperature",
        "--top-p",
        "--seed",
    ):
        assert flag in text
