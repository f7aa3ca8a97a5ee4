"""SFT: token-space masks, zero gradient outside assistant turns, batching under a budget, a tiny
model learns to answer and to stop."""

import random

import pytest
import torch
import torch.nn.functional as F

from model import Transformer, config_from_preset, generate
from pretrain import TrainConfig, lm_loss, train
from sft import SFTConfig, batch_source, collate, encode_conversations, length_grouped_batches

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is 2 plus 3?"},
    {"role": "assistant", "content": "2 plus 3 is 5."},
    {"role": "user", "content": "그럼 3 더하기 4는요?"},
    {"role": "assistant", "content": "3 더하기 4는 7입니다."},
]


def hand_built(tok, messages):
    """The expectation, written out from DESIGN.md §2 rather than through render_chat."""
    role_id = {"system": tok.system_id, "user": tok.user_id, "assistant": tok.assistant_id}
    ids, mask = [tok.bos_id], [0]
    for m in messages:
        body = tok.encode(m["content"]) + [tok.eot_id]
        learn = 1 if m["role"] == "assistant" else 0
        ids += [role_id[m["role"]]] + body
        mask += [0] + [learn] * len(body)
    return ids, mask


def test_collated_targets_and_mask_match_the_hand_built_expectation(small_tokenizer):
    tok = small_tokenizer
    ids, mask = hand_built(tok, CONVERSATION)
    ((got_ids, got_mask),) = encode_conversations([CONVERSATION], tok, 512)[0]
    assert (got_ids, got_mask) == (ids, mask)
    batch = collate([(ids, mask), (ids[:9], mask[:9])], tok.pad_id)
    assert batch["x"][0].tolist() == ids[:-1] and batch["y"][0].tolist() == ids[1:]
    assert batch["loss_mask"][0].tolist() == [float(m) for m in mask[1:]]
    # y[t] is learned exactly when it is an assistant-content token or the end-of-turn closing an
    # assistant turn
    learned = [y for y, m in zip(ids[1:], mask[1:]) if m]
    assert learned == (
        tok.encode("2 plus 3 is 5.")
        + [tok.eot_id]
        + tok.encode("3 더하기 4는 7입니다.")
        + [tok.eot_id]
    )
    assert batch["x"][1, 8:].eq(tok.pad_id).all() and batch["y"][1, 8:].eq(-100).all()
    assert tok.pad_id != tok.eos_id


def test_user_and_system_tokens_get_zero_gradient(small_tokenizer):
    tok = small_tokenizer
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size))
    ids, mask = hand_built(tok, CONVERSATION)
    batch = collate([(ids, mask)], tok.pad_id)
    captured = {}
    hooks = [  # (update returns None: the hooks change no output)
        model.norm.register_forward_hook(lambda m, i, out: captured.update(hidden=out)),
        model.lm_head.register_forward_hook(lambda m, inp, o: captured.update(head=inp[0])),
    ]
    _, loss = model(batch["x"], batch["y"], batch["loss_mask"])
    for h in hooks:
        h.remove()
    learned = batch["loss_mask"][0].bool()  # (T,)
    # the LM head (the loss's only reader) sees the assistant positions and nothing else
    assert torch.equal(captured["head"], captured["hidden"][0, learned])
    captured["head"].retain_grad()
    loss.backward()
    assert captured["head"].grad.abs().sum(-1).gt(0).all()  # each assistant position learns
    logits, _ = model(batch["x"])  # every position, for the cross-entropy written out
    expect = F.cross_entropy(logits[0, learned], batch["y"][0, learned])
    assert abs(loss.item() - expect.item()) < 1e-6
    # so a user/system position's target gets no gradient: changing them changes nothing
    y = batch["y"].clone()
    y[0, ~learned & (y[0] >= 0)] = (y[0, ~learned & (y[0] >= 0)] + 1) % tok.vocab_size
    assert model(batch["x"], y, batch["loss_mask"])[1].item() == loss.item()


def test_length_grouped_batches_cover_every_example_once_within_budget():
    rng = random.Random(0)
    examples = [([1] * rng.randint(3, 120), [0] * 3) for _ in range(300)]
    units = [[e] for e in examples]
    batches = length_grouped_batches(units, max_tokens=512, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(300))
    for b in batches:
        longest = max(len(examples[i][0]) - 1 for i in b)
        assert longest * len(b) <= 512 or len(b) == 1
    assert batches == length_grouped_batches(units, 512, 1, 0)
    assert batches != length_grouped_batches(units, 512, 1, 1)


def test_truncation_rule_is_counted(small_tokenizer):
    tok = small_tokenizer
    fits = len(hand_built(tok, CONVERSATION)[0]) - 1  # exactly max_len + 1 tokens: kept whole
    cut = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello " * 200}]
    lost = [
        {"role": "user", "content": "hello " * 200 + "?"},
        {"role": "assistant", "content": "ok"},
    ]
    examples, counts = encode_conversations([CONVERSATION, cut, lost], tok, fits)
    assert counts == {"examples": 2, "truncated": 2, "dropped": 1}
    # a cut reply loses its end-of-turn
    assert len(examples[1][0]) == fits + 1 and examples[1][0][-1] != tok.eot_id
    assert examples[0][0] == hand_built(tok, CONVERSATION)[0]


def test_tiny_model_learns_to_answer_and_stop(small_tokenizer, tmp_path, capsys):
    tok = small_tokenizer
    qa = [
        ("What is the capital of France?", "Paris is the capital."),
        ("프랑스의 수도는 어디인가요?", "파리입니다."),
        ("Say hello.", "Hello!"),
        ("7 더하기 8은 얼마인가요?", "7 더하기 8은 15입니다."),
    ]
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in qa]
    examples, _ = encode_conversations(chats, tok, 64)
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64))
    cfg = SFTConfig(
        out_dir=str(tmp_path / "sft"),
        steps=120,
        max_tokens=256,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=10,
        device="cpu",
        compile=False,
        save_every=0,
    )
    train(
        model,
        batch_source([[e] for e in examples], cfg, tok.pad_id, torch.device("cpu")),
        cfg,
        {"phase": "sft-test"},
        tokenizer_path=tok.model_path,
    )
    prompts = [tok.render_chat(c[:1], add_generation_prompt=True)[0] for c in chats]
    outs = generate(model, prompts, 24, temperature=0.0, stop_ids=(tok.eot_id,), pad_id=tok.pad_id)
    for (q, a), out in zip(qa, outs):
        assert out[-1] == tok.eot_id, f"{q!r}: did not stop"
        assert tok.decode(out[:-1]) == a

    # the chat CLI's one-shot mode answers from the saved checkpoint folder, streaming the same
    # reply
    import chat

    chat.main(["--ckpt", cfg.out_dir, "--prompt", qa[1][0]])
    assert capsys.readouterr().out.strip().endswith(qa[1][1])


@pytest.fixture(scope="module")
def text_data(small_tokenizer, tmp_path_factory):
    """data.py's folder (train.bin, val.bin, meta.json) from the tokenizer fixtures' text."""
    import json
    import os

    import data

    fixtures = os.path.join(os.path.dirname(__file__), "fixtures", "tokenizer")
    out = str(tmp_path_factory.mktemp("lm_data"))
    sources = [f"{g}:{g}:{os.path.join(fixtures, g + '.jsonl')}" for g in ("ko", "en", "code")]
    data.build(
        data.DataConfig(
            out_dir=out, tokenizer=small_tokenizer.model_path, source=sources, val_fraction=0.2
        ),
        small_tokenizer,
    )
    assert (
        json.load(open(os.path.join(out, "meta.json")))["special_ids"]
        == small_tokenizer.special_ids()
    )
    return out


def test_lm_mix_adds_the_weighted_loss_of_pretraining_windows(small_tokenizer, text_data, tmp_path):
    import os

    from data import PretrainBatches
    from sft import with_lm_mix

    tok = small_tokenizer
    examples, _ = encode_conversations([CONVERSATION] * 4, tok, 64)
    cfg = SFTConfig(
        max_tokens=256, lm_mix=0.5, lm_data=text_data, lm_batch=3, lm_seq_len=32, seed=7
    )
    plain = batch_source([[e] for e in examples], cfg, tok.pad_id, torch.device("cpu"))
    # off: the loop's default
    assert with_lm_mix(plain, SFTConfig(lm_mix=0.0), tok, "cpu") == (plain, lm_loss)
    get_batch, loss_fn = with_lm_mix(plain, cfg, tok, "cpu")
    batch = get_batch(2, 0)
    # step 2's windows
    x, y = PretrainBatches(os.path.join(text_data, "train.bin"), 3, seed=7).get(2, 32)
    assert (
        torch.equal(batch["lm_x"], x)
        and torch.equal(batch["lm_y"], y)
        and torch.equal(batch["x"], plain(2, 0)["x"])
    )
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64))
    loss, metrics = loss_fn(model, batch)
    chat = model(batch["x"], batch["y"], batch["loss_mask"])[1].item()
    text = model(x, y)[1].item()
    assert loss.item() == pytest.approx(chat + 0.5 * text, rel=1e-5) and metrics[
        "lm_loss"
    ] == pytest.approx(text)
    with pytest.raises(SystemExit, match="meta.json not found"):
        with_lm_mix(plain, SFTConfig(lm_mix=0.5, lm_data=str(tmp_path)), tok, "cpu")
    # a folder another tokenizer wrote (tokenizer.py's models all share the special ids: the file's
    # hash tells them apart)
    import hashlib
    import json

    meta = json.load(open(os.path.join(text_data, "meta.json")))
    assert meta["tokenizer_sha256"] == hashlib.sha256(open(tok.model_path, "rb").read()).hexdigest()
    (tmp_path / "meta.json").write_text(json.dumps(dict(meta, tokenizer_sha256="0" * 64)))
    with pytest.raises(SystemExit, match="another tokenizer"):
        with_lm_mix(plain, SFTConfig(lm_mix=0.5, lm_data=str(tmp_path)), tok, "cpu")


def test_lm_mix_keeps_general_text_that_chat_training_forgets(small_tokenizer, text_data, tmp_path):
    """From a model pretrained on the text, the same chat training with and without the mix: without
    it the loss on held-out pretraining text (data.py's val.bin) rises; with it, it stays lower, and
    the chats are learnt either way."""
    import copy
    import os

    from data import PretrainBatches, val_batches
    from sft import with_lm_mix

    tok = small_tokenizer
    examples, _ = encode_conversations([CONVERSATION] * 8, tok, 64)
    torch.manual_seed(0)
    base = Transformer(config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=64))
    windows = PretrainBatches(os.path.join(text_data, "train.bin"), 8, seed=0)
    quiet = dict(device="cpu", compile=False, save_every=0, warmup_steps=5)
    train(
        base,
        lambda step, micro: dict(zip("xy", windows.get(step, 63))),
        TrainConfig(out_dir=str(tmp_path / "base"), steps=80, lr=3e-3, min_lr=3e-4, **quiet),
        {"phase": "t"},
        log=lambda *a: None,
    )

    def losses(model):
        with torch.no_grad():
            val = [
                model(x, y)[1].item()
                for x, y in val_batches(os.path.join(text_data, "val.bin"), 4, 63, 4)
            ]
            chat = model(*(collate(examples[:2], tok.pad_id)[k] for k in ("x", "y", "loss_mask")))[
                1
            ].item()
        return sum(val) / len(val), chat

    before = losses(base)
    after = {}
    for mix in (0.0, 1.0):
        model = copy.deepcopy(base)
        cfg = SFTConfig(
            out_dir=str(tmp_path / f"m{mix}"),
            steps=30,
            max_tokens=256,
            lr=3e-3,
            min_lr=3e-4,
            lm_mix=mix,
            lm_data=text_data,
            lm_batch=4,
            lm_seq_len=63,
            **quiet,
        )
        get_batch, loss_fn = with_lm_mix(
            batch_source([[e] for e in examples], cfg, tok.pad_id, "cpu"), cfg, tok, "cpu"
        )
        train(model, get_batch, cfg, {"phase": "t"}, loss_fn=loss_fn, log=lambda *a: None)
        after[mix] = losses(model)
    assert after[0.0][0] > before[0] + 0.2, (before, after)  # chat training alone forgets text
    assert after[1.0][0] < after[0.0][0] - 0.2, (before, after)  # the mix keeps (much of) it
    # chats learnt
    assert after[0.0][1] < before[1] - 1.0 and after[1.0][1] < before[1] - 1.0, (before, after)


def test_jsft_cli_mixes_pretraining_text_too(small_tokenizer, text_data, tmp_path):
    import dataclasses
    import json
    import os

    import jsft
    from pretrain import save_checkpoint

    fix = os.path.join(os.path.dirname(__file__), "fixtures", "jsft")
    tok = small_tokenizer
    cfg = config_from_preset("tiny", vocab_size=tok.vocab_size, max_seq_len=192)
    init, out = str(tmp_path / "init"), str(tmp_path / "jsft")
    save_checkpoint(
        init,
        Transformer(cfg).state_dict(),
        {"phase": "test", "model": dataclasses.asdict(cfg)},
        tokenizer_path=tok.model_path,
    )
    args = [
        "--init-from",
        init,
        "--out-dir",
        out,
        "--data",
        os.path.join(fix, "chats.jsonl"),
        "--prefs",
        os.path.join(fix, "prefs_train.jsonl"),
        "--eval-prefs",
        "none",
        "--steps",
        "2",
        "--seq-len",
        "192",
        "--max-tokens",
        "1024",
        "--val-fraction",
        "0",
        "--device",
        "cpu",
        "--lm-mix",
        "0.5",
        "--lm-data",
        text_data,
        "--lm-seq-len",
        "64",
        "--sampled-pairs",
        "0",
    ]
    for flag in ("--seq-len", "--lm-seq-len"):  # longer than the model's context: said up front
        with pytest.raises(SystemExit, match=f"{flag} 193 exceeds the model's max_seq_len 192"):
            jsft.main(args + [flag, "193"])
    jsft.main(args)
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert len(rows) == 2 and all(
        r["loss"] == pytest.approx(r["chat_loss"] + 0.5 * r["lm_loss"], rel=1e-4) for r in rows
    )


def test_bad_start_or_flag_ends_with_one_line_not_a_traceback(tmp_path):
    """What a newcomer gets wrong first, run as a newcomer runs it: a start folder with no
    checkpoint, a model size that does not exist, a judge that does not exist."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for script, args, says in [
        ("sft.py", ["--init-from", str(tmp_path / "nope")], "nope: no checkpoint"),
        ("pretrain.py", ["--preset", "7b"], "--preset: invalid choice: '7b'"),
        ("self_judge.py", ["--judge", "gpt4"], "--judge: invalid choice: 'gpt4'"),
    ]:
        run = subprocess.run(
            [sys.executable, os.path.join(root, script), *args, "--out-dir", str(tmp_path / "o")],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": root},
        )
        assert run.returncode != 0 and says in run.stderr, (script, run.stderr[-500:])
        assert "Traceback" not in run.stderr, (script, run.stderr[-2000:])
