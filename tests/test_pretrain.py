"""The one training loop: exact resume, signals, atomic checkpoints, NaN stop, wrappers, DDP on
gloo."""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import pretrain
from model import Transformer, config_from_preset
from pretrain import TrainConfig, load_checkpoint, load_model, lr_at, parse_config, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB, T, B = 64, 16, 4
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SCRIPTS = [
    f"{s}.py"
    for s in "pretrain sft jsft self_judge reward_model evaluate data tasks tokenizer".split()
]


def synthetic_tokens(n=4096, seed=0):
    """A learnable toy language: a noisy repeating sequence."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(n) % 13 + 3
    noise = torch.randint(0, VOCAB, (n,), generator=g)
    keep = torch.rand(n, generator=g) < 0.9
    return torch.where(keep, base, noise)


def make_get_batch(tokens, batch=B, seq_len=T, seed=0):
    def get_batch(step, micro):
        g = torch.Generator().manual_seed(seed * 100003 + step * 31 + micro)
        starts = torch.randint(0, len(tokens) - seq_len - 1, (batch,), generator=g)
        x = torch.stack([tokens[s : s + seq_len] for s in starts])
        y = torch.stack([tokens[s + 1 : s + seq_len + 1] for s in starts])
        return {"x": x, "y": y}

    return get_batch


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return Transformer(config_from_preset("tiny", vocab_size=VOCAB, max_seq_len=T, **kw))


def cfg_for(tmp_path, **kw):
    base = dict(
        out_dir=str(tmp_path / "ckpt"),
        steps=8,
        batch_size=B,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        eval_every=0,
        save_every=0,
        seed=0,
        device="cpu",
        compile=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_lr_schedule_matches_hand_values():
    cfg = TrainConfig(steps=110, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.5 * 0.9)  # half-way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_parse_config_builds_flags_from_the_dataclass():
    cfg = parse_config(
        TrainConfig, ["--steps", "7", "--lr", "0.5", "--no-resume", "--compile", "--out-dir", "x"]
    )
    assert (cfg.steps, cfg.lr, cfg.resume, cfg.compile, cfg.out_dir) == (7, 0.5, False, True, "x")
    assert parse_config(TrainConfig, []).compile is None  # auto: on for CUDA only


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_flag_says_what_it_is_and_its_default(script):
    """--help: a text for every flag, a subclass's changed default included (JSFT's steps)."""
    out = subprocess.run(
        [sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flags = re.findall(r"^  (--[a-z-]+)(.*)\n((?:  {5,}.*\n)*)", out, re.M)
    assert len(flags) > 3, out
    for flag, rest, more in flags:
        text = re.sub(r"^--no-[a-z-]+|^ [A-Z_]+|^, --no-[a-z-]+", "", rest).strip() + more.strip()
        assert text and not text.startswith("(default:"), f"{script} {flag}: no help text"
    if script == "jsft.py":
        assert re.search(r"--steps STEPS\s+optimizer steps \(default: 900\)", out), out


def test_a_config_field_without_help_is_named():
    @dataclasses.dataclass
    class Bad(TrainConfig):
        temperature: float = 1.0

    with pytest.raises(TypeError, match="Bad.temperature"):
        parse_config(Bad, [])


def test_loss_falls_on_a_learnable_stream(tmp_path):
    model = tiny_model()
    history = train(
        model,
        make_get_batch(synthetic_tokens()),
        cfg_for(tmp_path, steps=60, warmup_steps=5),
        {"phase": "test"},
    )
    start, end = history[0]["loss"], sum(r["loss"] for r in history[-5:]) / 5
    assert start > math.log(VOCAB) - 0.7 and end < start - 1.5


def test_validation_runs_in_eval_mode_without_gradients_then_training_resumes(tmp_path):
    model = Transformer(config_from_preset("tiny", vocab_size=VOCAB, max_seq_len=T, dropout=0.1))
    seen = []

    def val_fn(m):
        seen.append((m.training, torch.is_grad_enabled()))
        return {"val_loss": 0.0}

    cfg = cfg_for(tmp_path, steps=2, eval_every=1)
    train(model, make_get_batch(synthetic_tokens()), cfg, {"phase": "test"}, val_fn=val_fn)
    assert seen == [(False, False), (False, False)]  # no dropout, no graph: at every validation
    assert model.training  # and the loop went on (and ends) in training mode


def test_the_loop_closes_with_one_done_line_of_first_and_last_loss_and_the_last_metrics(tmp_path):
    """Every phase's closing line comes from train: loss first -> last step, then the last step's
    DONE_METRICS that the phase logged (val_loss here), then where the checkpoint is."""
    lines = []
    history = train(
        tiny_model(),
        make_get_batch(synthetic_tokens()),
        cfg_for(tmp_path, steps=3, eval_every=3),
        {"phase": "test"},
        val_fn=lambda m: {"val_loss": 1.25},
        log=lines.append,
    )
    first, last = history[0]["loss"], history[-1]["loss"]
    assert lines[-1] == (
        f"done: loss {first:.3f} -> {last:.3f}, val_loss 1.250; checkpoint in {tmp_path / 'ckpt'}"
    )


def test_resume_after_signal_gives_identical_weights(tmp_path):
    """With dropout on, so the resumed run must also restore the random state of the step."""
    tokens = synthetic_tokens()
    straight = tiny_model(dropout=0.1)
    train(straight, make_get_batch(tokens), cfg_for(tmp_path / "a"), {"phase": "test"})

    interrupted = tiny_model(dropout=0.1)
    base = make_get_batch(tokens)

    def get_batch_then_sigint(step, micro):
        if step == 3:  # SIGINT during step 3: the loop finishes that step, saves at 4, returns
            os.kill(os.getpid(), signal.SIGINT)
        return base(step, micro)

    cfg_b = cfg_for(tmp_path / "b")
    # saves, then exits with 128 + SIGINT so `make` stops too
    with pytest.raises(SystemExit) as stopped:
        train(interrupted, get_batch_then_sigint, cfg_b, {"phase": "test"})
    assert stopped.value.code == 128 + signal.SIGINT and "--resume" in str(stopped.value)
    assert json.load(open(tmp_path / "b" / "ckpt" / "config.json"))["step"] == 4

    resumed = tiny_model(seed=123, dropout=0.1)  # everything must come from the checkpoint
    cfg_b.resume = True
    train(resumed, make_get_batch(tokens), cfg_b, {"phase": "test"})
    for k, v in weights(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "ckpt" / "metrics.jsonl")]
    assert steps == list(range(1, 9))  # metrics continue, no duplicates


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    tokens = synthetic_tokens()
    big = make_get_batch(tokens, batch=2 * B)

    def halves(step, micro):
        full = big(step, 0)
        return {k: v[micro * B : (micro + 1) * B] for k, v in full.items()}

    one, two = tiny_model(), tiny_model()
    train(one, big, cfg_for(tmp_path / "a", steps=3, batch_size=2 * B), {"phase": "test"})
    train(two, halves, cfg_for(tmp_path / "b", steps=3, grad_accum=2), {"phase": "test"})
    for k, v in one.state_dict().items():
        torch.testing.assert_close(v, two.state_dict()[k], atol=1e-5, rtol=1e-4)


def test_interrupted_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    model = tiny_model()
    cfg = cfg_for(tmp_path, steps=4, save_every=2)
    train(model, make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})
    good_state, good_config = load_checkpoint(cfg.out_dir)
    assert good_config["step"] == 4

    real_save = torch.save

    def crashing_save(obj, path, *a, **k):
        with open(path, "wb") as fh:  # a half-written file, then the "power cut"
            fh.write(b"partial")
        raise KeyboardInterrupt("simulated crash mid-save")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        pretrain.save_checkpoint(
            cfg.out_dir,
            {k: v + 1 for k, v in model.state_dict().items()},
            {"model": good_config["model"], "step": 99},
            {"step": 99},
        )
    monkeypatch.setattr(torch, "save", real_save)

    state, config = load_checkpoint(cfg.out_dir)
    assert config["step"] == 4 and all(torch.equal(state[k], good_state[k]) for k in state)
    assert not [f for f in os.listdir(cfg.out_dir) if ".tmp" in f]
    reloaded = tiny_model(seed=5)
    cfg.resume, cfg.steps = True, 5  # still resumable
    train(reloaded, make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})


def test_planted_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    model = tiny_model()
    cfg = cfg_for(tmp_path, steps=8, save_every=3)

    def loss_with_nan(m, batch):
        loss, extra = pretrain.lm_loss(m, batch)
        return (loss * float("nan") if loss_with_nan.calls == 4 else loss), extra

    loss_with_nan.calls = 0
    base = make_get_batch(synthetic_tokens())

    def counting(step, micro):
        loss_with_nan.calls = step
        return base(step, micro)

    with pytest.raises(
        SystemExit, match=r"non-finite loss \(nan\) .*at step 5.*last good checkpoint"
    ):
        train(model, counting, cfg, {"phase": "test"}, loss_fn=loss_with_nan)
    state, config = load_checkpoint(cfg.out_dir)
    assert config["step"] == 3
    assert all(torch.isfinite(v).all() for v in state.values())


def test_finite_loss_with_nan_gradient_stops_before_the_step(tmp_path):
    """sqrt(x^2) at x = 0 adds 0 to the loss and 0/0 to the gradient: a finite loss whose step
    would turn every weight NaN. The loop must stop before stepping, not save the poisoned weights
    (at a save_every step, or as the run's last and only save)."""

    def loss_with_nan_grad(m, batch):
        loss, extra = pretrain.lm_loss(m, batch)
        if loss_with_nan_grad.calls == 4:
            w = m.norm.weight[0]
            loss = loss + torch.sqrt((w - w.detach()) ** 2)
        return loss, extra

    base = make_get_batch(synthetic_tokens())

    def counting(step, micro):
        loss_with_nan_grad.calls = step
        return base(step, micro)

    for name, steps, save_every, saved in [("mid", 8, 3, 3), ("last", 5, 0, None)]:
        cfg = cfg_for(tmp_path / name, steps=steps, save_every=save_every)
        with pytest.raises(SystemExit, match=r"gradient norm \(nan\) at step 5"):
            train(tiny_model(), counting, cfg, {"phase": "test"}, loss_fn=loss_with_nan_grad)
        if saved is None:
            assert pretrain.find_checkpoint(cfg.out_dir) is None
            continue
        state, config = load_checkpoint(cfg.out_dir)
        assert config["step"] == saved
        assert all(torch.isfinite(v).all() for v in state.values())


def test_grad_clip_scales_the_gradient_to_the_clip_norm(tmp_path, monkeypatch):
    """The gradient AdamW steps on has norm --grad-clip and the direction of the unclipped one; the
    logged grad_norm is the norm before clipping."""
    seen = {}
    real_step = torch.optim.AdamW.step

    def spy_step(self, *a, **k):
        seen["grad"] = torch.cat([p.grad.flatten() for g in self.param_groups for p in g["params"]])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy_step)
    runs = {}
    for clip in (0.0, 1e-3):
        cfg = cfg_for(tmp_path / str(clip), steps=1, warmup_steps=1, grad_clip=clip)
        rows = train(tiny_model(), make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})
        runs[clip] = (rows[0]["grad_norm"], seen["grad"])
    (norm, free), (norm_before_clip, clipped) = runs[0.0], runs[1e-3]
    assert norm_before_clip == pytest.approx(norm) and norm > 1e-2
    assert free.norm().item() == pytest.approx(norm, rel=1e-4)
    assert clipped.norm().item() == pytest.approx(1e-3, rel=1e-3)
    torch.testing.assert_close(clipped, free * (1e-3 / norm), rtol=1e-3, atol=1e-9)


def test_wrapped_state_dicts_load_into_a_plain_transformer(tmp_path):
    model = tiny_model()
    compiled = torch.compile(model)  # state_dict keys get `_orig_mod.`
    assert any(k.startswith("_orig_mod.") for k in compiled.state_dict())
    for name, state in [
        ("compiled", compiled.state_dict()),
        ("ddp", {"module." + k: v for k, v in model.state_dict().items()}),
    ]:
        out = tmp_path / name
        pretrain.save_checkpoint(
            str(out), state, {"model": pretrain.dataclasses.asdict(model.cfg), "step": 0}
        )
        plain, _ = load_model(str(out))
        for k, v in model.state_dict().items():
            assert torch.equal(v, plain.state_dict()[k])
    # the loop itself always saves the unwrapped module, even when it trains a compiled one
    cfg = cfg_for(tmp_path / "loop", steps=1, compile=True)
    train(model, make_get_batch(synthetic_tokens()), cfg, {"phase": "test"})
    raw_keys = set(torch.load(os.path.join(cfg.out_dir, "model.pt"), weights_only=True))
    assert raw_keys == set(model.state_dict())


def test_torchrun_two_ranks_equal_one_process_with_the_global_batch(tmp_path):
    worker = os.path.join(ROOT, "tests", "ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    single = tmp_path / "single"
    subprocess.run(
        [sys.executable, worker, str(single), str(2 * B)],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    double = tmp_path / "ddp"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            worker,
            str(double),
            str(B),
        ],
        check=True,
        env=env,
        cwd=ROOT,
        timeout=240,
    )
    one, _ = load_model(str(single))
    two, config = load_model(str(double))  # saved from a DDP-wrapped model, loads into a plain one
    assert config["train"]["batch_size"] == B
    for k, v in one.state_dict().items():
        torch.testing.assert_close(v, two.state_dict()[k], atol=2e-5, rtol=1e-4)
    seen = [torch.load(double / f"seen_rank{r}.pt") for r in range(2)]
    for step in range(len(seen[0])):
        rows0 = {tuple(r.tolist()) for r in seen[0][step]}
        rows1 = {tuple(r.tolist()) for r in seen[1][step]}
        assert not rows0 & rows1, f"step {step}: both ranks saw the same window"
    single_seen = torch.load(single / "seen_rank0.pt")
    for step in range(len(single_seen)):
        assert torch.equal(single_seen[step], torch.cat([seen[0][step], seen[1][step]]))


def test_weight_decay_shrinks_matrices_only_never_norm_gains_or_biases(tmp_path):
    """With every gradient zero, one AdamW step changes nothing but the decoupled decay: each matrix
    is multiplied by exactly (1 - lr * weight_decay), every 1-d parameter (RMSNorm gains) stays."""
    model = tiny_model()
    before = weights(model)

    def zero_grads(m, batch):
        return sum((p * 0).sum() for p in m.parameters()), {}

    cfg = cfg_for(tmp_path, steps=1, warmup_steps=1, weight_decay=0.5, grad_clip=0)
    train(model, make_get_batch(synthetic_tokens()), cfg, {"phase": "test"}, loss_fn=zero_grads)
    assert any(v.dim() == 1 for v in before.values())
    for k, v in model.state_dict().items():
        expected = before[k] * (1 - cfg.lr * cfg.weight_decay) if v.dim() >= 2 else before[k]
        torch.testing.assert_close(v, expected, rtol=0, atol=1e-7, msg=k)


def test_grad_accumulation_logs_the_big_batch_grad_norm(tmp_path):
    """The accumulated gradient is the mean over equal micro-batches, as one big batch: same norm,
    so the clip threshold means the same whatever --grad-accum is."""
    tokens = synthetic_tokens()
    big = make_get_batch(tokens, batch=2 * B)

    def halves(step, micro):
        return {k: v[micro * B : (micro + 1) * B] for k, v in big(step, 0).items()}

    cfg_one = cfg_for(tmp_path / "a", steps=2, batch_size=2 * B)
    one = train(tiny_model(), big, cfg_one, {"phase": "test"})
    cfg_two = cfg_for(tmp_path / "b", steps=2, grad_accum=2)
    two = train(tiny_model(), halves, cfg_two, {"phase": "test"})
    for r1, r2 in zip(one, two):
        assert r2["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-4)
        assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-4)


def test_pretrain_main_gives_each_micro_batch_its_own_sampler_step(tmp_path, monkeypatch):
    """With --grad-accum 2, optimizer step s reads sampler steps 2s and 2s + 1: each window once."""
    import data

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    synthetic_tokens(8192).numpy().astype("uint16").tofile(data_dir / "train.bin")
    synthetic_tokens(2048, seed=1).numpy().astype("uint16").tofile(data_dir / "val.bin")
    (data_dir / "meta.json").write_text(json.dumps({"vocab_size": VOCAB}))
    asked, real_get = [], data.PretrainBatches.get

    def get(self, step, seq_len):
        asked.append(step)
        return real_get(self, step, seq_len)

    monkeypatch.setattr(data.PretrainBatches, "get", get)
    args = [
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(tmp_path / "out"),
        "--preset",
        "tiny",
        "--steps",
        "3",
        "--grad-accum",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--short-seq-len",
        "0",
        "--eval-every",
        "0",
        "--eval-batches",
        "1",
        "--device",
        "cpu",
        "--no-compile",
    ]
    pretrain.main(args)
    assert asked == [0, 1, 2, 3, 4, 5]
    # a tokenizer that changed after data.py wrote its ids is refused before it is copied into a
    # checkpoint beside a model trained on the old ids
    tokenizer = tmp_path / "tokenizer.model"
    tokenizer.write_bytes(b"the tokenizer data.py read")
    meta = {"vocab_size": VOCAB, "tokenizer": str(tokenizer)}
    meta["tokenizer_sha256"] = pretrain.file_sha256(str(tokenizer))
    (data_dir / "meta.json").write_text(json.dumps(meta))
    tokenizer.write_bytes(b"retrained since")
    with pytest.raises(SystemExit, match="tokenizer.model is not the one data.py read"):
        pretrain.main(args + ["--out-dir", str(tmp_path / "o2")])
