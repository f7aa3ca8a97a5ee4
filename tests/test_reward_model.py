"""reward_model.py and the reward-model judge: the Bradley-Terry loss against hand values, the
scalar read at the last real token whatever the padding, a tiny reward model that learns a planted
preference, the on-policy loop with the judge swapped (nothing else changes), the CLI and exact
resume, and the Hugging Face export (LlamaForSequenceClassification gives the same scores)."""

import copy
import dataclasses
import json
import math
import os
import random
import shutil

import pytest
import torch

import reward_model as RM
import self_judge as SJ
import tasks
from readers import DataError, PreferencePair, run_main
from model import Transformer, config_from_preset
from pretrain import TrainConfig, load_model, save_checkpoint, train
from tokenizer import Tokenizer, train_tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "self_judge")
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tokenizer, an (untrained) tiny language model saved as an SFT checkpoint, and task
    prompts."""
    root = tmp_path_factory.mktemp("rm")
    tok = Tokenizer(
        train_tokenizer(tasks.pretrain_documents(0), str(root / "tok"), vocab_size=1024)
    )
    torch.manual_seed(0)
    lm = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=128))
    ckpt = str(root / "sft")
    save_checkpoint(
        ckpt,
        lm.state_dict(),
        {"phase": "sft", "model": dataclasses.asdict(lm.cfg)},
        None,
        tokenizer_path=tok.model_path,
    )
    prompts = [t["messages"] for t in tasks.build_world(0)["train"][::40]]
    return {"tok": tok, "lm": lm, "ckpt": ckpt, "root": root, "prompts": prompts}


def random_rm(world, seed=0):
    torch.manual_seed(seed)
    rm = RM.with_reward_head(world["lm"])
    torch.nn.init.normal_(rm.lm_head.weight, std=1.0)  # a head that reads something
    return rm.eval()


# ----------------------------------------------------------------------------- the loss and the
# head
def test_bt_loss_equals_hand_computed_values():
    loss, m = RM.bt_loss(torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0]))
    # margins 1.5 and -2.0: log(1 + e^-1.5) = 0.201413, log(1 + e^2) = 2.126928
    assert loss.item() == pytest.approx((0.201413 + 2.126928) / 2, abs=1e-5)
    assert m["reward_acc"] == 0.5 and m["margin"] == pytest.approx(-0.25)
    r_c = torch.tensor([0.3], requires_grad=True)
    RM.bt_loss(r_c, torch.tensor([0.0]))[0].backward()
    # -sigmoid(-m)
    assert r_c.grad.item() == pytest.approx(-(1 - 1 / (1 + math.exp(-0.3))), abs=1e-6)


def test_zero_head_starts_every_reward_at_zero_and_keeps_the_body(world):
    rm = RM.with_reward_head(world["lm"])
    assert rm.cfg.reward_head and rm.lm_head.weight.shape == (1, rm.cfg.dim)
    assert torch.equal(rm.layers[0].mlp.up_proj.weight, world["lm"].layers[0].mlp.up_proj.weight)
    ids = torch.randint(5, 100, (3, 9))
    assert torch.equal(RM.sequence_rewards(rm, ids, torch.ones_like(ids)), torch.zeros(3))


def test_reward_is_read_at_the_last_real_token_right_or_left_padded(world):
    rm, pad = random_rm(world), world["tok"].pad_id
    rows = [[5, 17, 33, 8, 91], [7, 7, 40], [12, 60, 3, 3, 9, 44, 20]]
    alone = []
    # independent expectation: the full forward of the row alone, at its last position
    for r in rows:
        values, _ = rm(torch.tensor([r]))
        alone.append(values[0, len(r) - 1, 0].item())
    T = max(map(len, rows))
    right, left = torch.full((3, T), pad), torch.full((3, T), pad)
    real_right, real_left = torch.zeros(3, T, dtype=torch.long), torch.zeros(3, T, dtype=torch.long)
    for b, r in enumerate(rows):
        right[b, : len(r)], real_right[b, : len(r)] = torch.tensor(r), 1
        left[b, T - len(r) :], real_left[b, T - len(r) :] = torch.tensor(r), 1
    for ids, real in ((right, real_right), (left, real_left)):
        assert RM.sequence_rewards(rm, ids, real).tolist() == pytest.approx(alone, abs=1e-5)
        # padding is never read
        junk = torch.where(real.bool(), ids, torch.randint(100, 200, ids.shape))
        assert RM.sequence_rewards(rm, junk, real).tolist() == pytest.approx(alone, abs=1e-5)
    assert len(set(round(a, 4) for a in alone)) == 3  # the rows really differ


def test_bt_loss_fn_reads_each_response_end_in_a_pair_batch(world):
    rm, tok = random_rm(world), world["tok"]
    prompts = [[1, 5, 6], [1, 9]]
    chosen, rejected = (
        [[20, 21, tok.eot_id], [30, tok.eot_id]],
        [[40, tok.eot_id], [50, 51, 52, tok.eot_id]],
    )
    batch = SJ.build_pair_batch(prompts, chosen, rejected, tok.pad_id)
    loss, m = RM.bt_loss_fn(rm, batch)
    seqs = [p + r for p, r in zip(prompts + prompts, chosen + rejected)]
    r = [rm(torch.tensor([s]))[0][0, -1, 0].item() for s in seqs]
    expected = sum(math.log1p(math.exp(-(r[i] - r[i + 2]))) for i in range(2)) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------- it learns
def marker_pairs(n, seed, marker="banana"):
    """Pairs whose chosen reply holds a marker word somewhere and whose rejected one does not."""
    rng = random.Random(seed)
    words = "the cat sat on a mat and we saw red blue green trees near old houses today".split()
    pairs = []
    for _ in range(n):
        reply = [rng.choice(words) for _ in range(rng.randint(3, 7))]
        marked = list(reply)
        marked.insert(rng.randint(0, len(reply)), marker)
        context = [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(4))}]
        pairs.append(PreferencePair(context, " ".join(marked), " ".join(reply)))
    return pairs


def test_a_tiny_reward_model_learns_a_planted_preference(world, tmp_path):
    tok = world["tok"]
    rm = RM.with_reward_head(world["lm"])
    held_out = marker_pairs(100, seed=1)
    before = RM.reward_accuracy(rm, tok, held_out)["acc"]
    tokenized, dropped = SJ.tokenize_pairs(tok, marker_pairs(400, seed=0), 128)
    cfg = TrainConfig(
        out_dir=str(tmp_path / "rm"),
        steps=60,
        batch_size=16,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        weight_decay=0.0,
        eval_every=0,
        save_every=0,
        device="cpu",
        compile=False,
        seed=0,
    )
    train(
        rm,
        SJ.offline_batches(tokenized, cfg, tok.pad_id, "cpu"),
        cfg,
        {"phase": "reward_model"},
        loss_fn=RM.bt_loss_fn,
        log=lambda *a: None,
    )
    after = RM.reward_accuracy(rm, tok, held_out)
    assert dropped == 0 and before == 0.5 and after["acc"] >= 0.95, (before, after)


# ----------------------------------------------------------------------------- the judge in the
# loop
def test_reward_judge_is_order_free_and_bt_calibrated(world):
    rm, tok = random_rm(world), world["tok"]
    contexts = world["prompts"][:3]
    pairs = [
        ("a short reply", "a longer reply with more words"),
        ([40, 41, tok.eot_id], [50, tok.eot_id]),
        ("same", "same"),
    ]
    out = RM.reward_judge(rm, tok)(contexts, pairs)
    swapped = RM.reward_judge(rm, tok)(contexts, [(b, a) for a, b in pairs])
    for p, q, (ra, rb) in zip(out["score_a"], swapped["score_a"], out["rewards"]):
        assert p == pytest.approx(1 - q, abs=1e-6) and p == pytest.approx(
            1 / (1 + math.exp(rb - ra)), abs=1e-6
        )
    assert out["score_a"][2] == 0.5 and out["first_order_a"] == out["second_order_a"]
    text_ids = (
        tok.render_chat(contexts[0], add_generation_prompt=True)[0]
        + tok.encode("a short reply")
        + [tok.eot_id]
    )
    assert out["rewards"][0][0] == pytest.approx(
        rm(torch.tensor([text_ids]))[0][0, -1, 0].item(), abs=1e-5
    )


def test_swapping_the_judge_changes_nothing_else_in_the_on_policy_loop(world, tmp_path):
    """Same seed, same policy: the reward-model judge, the self judge (a stub here) and the verifier
    see the same two samples per prompt; only which one is chosen may differ."""
    tok, prompts = world["tok"], world["prompts"][:6]
    cfg = SJ.SelfJudgeConfig(out_dir=str(tmp_path), batch_size=6, max_new_tokens=10, seed=3)
    longer_loses = lambda contexts, pairs: {
        "score_a": [float(len(a) < len(b)) for a, b in pairs],
        "winners": [int(len(a) >= len(b)) for a, b in pairs],
    }
    rows = tmp_path / "p.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"messages": c, "task": t}) + "\n"
            for c, t in zip(prompts, tasks.build_world(0)["train"][::40])
        ),
        encoding="utf-8",
    )
    batches = []
    for judge_fn in (
        RM.reward_judge(random_rm(world), tok),
        longer_loses,
        tasks.verifier_judge(str(rows), tok),
    ):
        batch = SJ.online_batches(copy.deepcopy(world["lm"]), judge_fn, tok, prompts, cfg)(0, 0)
        batches.append(batch)
    B = len(prompts)
    as_sets = [
        [
            frozenset((tuple(b["ids"][i].tolist()), tuple(b["ids"][B + i].tolist())))
            for i in range(B)
        ]
        for b in batches
    ]  # per prompt, the two samples whichever was chosen
    assert as_sets[0] == as_sets[1] == as_sets[2]
    lengths = batches[1]["mask"].sum(dim=1)  # the stub judge's own verdicts were followed
    assert all(lengths[i] <= lengths[B + i] for i in range(B))


# ----------------------------------------------------------------------------- the CLIs
def test_cli_trains_resumes_exactly_and_feeds_self_judge(world, tmp_path, capsys):
    args = [
        "--init-from",
        world["ckpt"],
        "--prefs",
        os.path.join(FIXTURES, "prefs.jsonl"),
        "--eval-prefs",
        os.path.join(FIXTURES, "prefs.jsonl"),
        "--seq-len",
        "128",
        "--batch-size",
        "2",
        "--lr",
        "1e-2",
        "--warmup-steps",
        "1",
        "--device",
        "cpu",
    ]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    RM.main(args + ["--out-dir", full, "--steps", "4"])
    rows = [json.loads(line) for line in open(os.path.join(full, "metrics.jsonl"))]
    assert rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5) and rows[-1]["loss"] < math.log(
        2
    )
    config = json.load(open(os.path.join(full, "config.json")))
    assert config["phase"] == "reward_model" and config["model"]["reward_head"] is True
    held_out = json.load(open(os.path.join(full, "rm_eval.json")))
    assert held_out["n"] == 4 and held_out["order_free"] is True
    printed = capsys.readouterr().out  # its accuracy alone: no per-order figures that cannot differ
    assert f"judge accuracy: acc {held_out['acc']:.1%}, n=4" in printed
    assert "chosen first" not in printed and "consistency" not in printed
    RM.main(args + ["--out-dir", part, "--steps", "2"])
    RM.main(args + ["--out-dir", part, "--steps", "4", "--resume"])
    a, b = (load_model(d, policy=False)[0].state_dict() for d in (full, part))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # no policy: what samples or fine-tunes from a checkpoint refuses a reward model by name
    with pytest.raises(DataError, match="full: a reward model"):
        load_model(full)
    import chat

    with pytest.raises(SystemExit, match="full.*: a reward model"):
        run_main(lambda: chat.main(["--ckpt", full, "--prompt", "What is 3 plus 4?"]))

    tasks_dir = tmp_path / "tasks"  # the on-policy arm judged by it: three models held
    tasks_dir.mkdir()
    shutil.copy(os.path.join(FIXTURES, "prompts.jsonl"), tasks_dir / "prompts_train.jsonl")
    out = str(tmp_path / "onpolicy_rm")
    SJ.main(
        [
            "--judge",
            "reward",
            "--reward-model",
            full,
            "--init-from",
            world["ckpt"],
            "--tasks-dir",
            str(tasks_dir),
            "--out-dir",
            out,
            "--val-count",
            "0",
            "--steps",
            "1",
            "--batch-size",
            "3",
            "--max-new-tokens",
            "8",
            "--device",
            "cpu",
        ]
    )
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["judged_by"] == "reward"
    assert (
        config["params_held"]
        == 2 * world["lm"].num_params() + load_model(full, policy=False)[0].num_params()
    )
    with pytest.raises(SystemExit, match="not a reward model"):
        SJ.main(
            [
                "--judge",
                "reward",
                "--reward-model",
                world["ckpt"],
                "--init-from",
                world["ckpt"],
                "--tasks-dir",
                str(tasks_dir),
                "--out-dir",
                str(tmp_path / "x"),
                "--device",
                "cpu",
            ]
        )


def test_transformers_scores_the_export_like_we_do(world, tmp_path):
    transformers = pytest.importorskip("transformers")
    import convert

    rm, tok = random_rm(world), world["tok"]
    ckpt = str(tmp_path / "rm")
    save_checkpoint(
        ckpt,
        rm.state_dict(),
        {"phase": "reward_model", "model": dataclasses.asdict(rm.cfg)},
        None,
        tokenizer_path=tok.model_path,
    )
    convert.export_hf(ckpt, str(tmp_path / "hf"))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "hf")
    ).eval()
    rows = [[1, 5, 17, 33, 8, 91], [1, 7, 7, 40], [1, 12, 60, 3, 3, 9, 44]]
    ids = torch.full((3, 7), tok.pad_id)
    real = torch.zeros(3, 7, dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)], real[b, : len(r)] = torch.tensor(r), 1
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=real).logits[:, 0]
        ours = RM.sequence_rewards(rm, ids, real)
    assert torch.allclose(theirs, ours, atol=1e-4), (theirs, ours)
    with pytest.raises(ValueError, match="one-way"):
        convert.import_hf(str(tmp_path / "hf"), str(tmp_path / "back"))
