"""pretrain.py — the one training loop of minihcx, and pretraining with it.

HyperCLOVA X §2.1: a decoder-only transformer trained left-to-right (plus fill-in-the-middle, done
in data.py) on Korean, English and code in equal thirds, with a short context for most of training
and a long context for the last ~10% of steps. This file holds the loop every phase uses:
sft.py and jsft.py call `train()` with their own batches, self_judge.py with its own loss.
Phases differ in their data and loss, not in their loop.

What the loop does (see `train`): AdamW (decay on matrices only), linear warmup + cosine decay,
gradient accumulation (one gradient all-reduce, on the last micro-step; each micro-batch's mean
loss weighs the same, as in nanoGPT), gradient clipping, bf16 autocast on CUDA, optional
`torch.compile`, periodic validation, crash-safe checkpoints that resume exactly (a kill at any
instant loses only the steps since the last completed save), a save and a clean exit on
SIGINT/SIGTERM, a stop before a step on a non-finite loss or gradient (the last save kept).

Run:
    python pretrain.py                               # embedded default, CPU
    python pretrain.py --preset tiny --steps 50      # smaller
    torchrun --nproc_per_node 2 pretrain.py          # data parallel (gloo on CPU, nccl on CUDA)
    torchrun --nproc_per_node 8 pretrain.py --fsdp   # FSDP2, one shard unit per block
    python pretrain.py --resume                      # continue exactly where the last run stopped
"""

import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import signal
import time
import typing
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from checkpoints import KEEP_LAST, find_checkpoint, load_checkpoint, save_checkpoint
from checkpoints import metrics_log, start_metrics
from model import PRESETS, ModelConfig, Transformer, config_from_preset, eval_mode
from readers import DataError, file_sha256, load_tensors, opt, parse_config, run_main


# ----------------------------------------------------------------------------- options
@dataclass
class TrainConfig:
    """The loop's options, shared by every phase (each phase's config subclasses this one)."""

    out_dir: str = opt("out/pretrain", "checkpoint folder this phase writes")
    steps: int = opt(400, "optimizer steps")
    batch_size: int = opt(16, "sequences per micro-batch per rank")
    grad_accum: int = opt(1, "micro-batches per optimizer step")
    lr: float = opt(2e-3, "peak learning rate")
    min_lr: float = opt(2e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = opt(30, "linear warmup steps")
    weight_decay: float = opt(0.1, "AdamW weight decay on matrices (not norms)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(1.0, "max global grad norm; 0 = off")
    eval_every: int = opt(100, "validate every N steps (and at the end); 0 = only at the end")
    eval_batches: int = opt(8, "validation batches per evaluation")
    save_every: int = opt(200, "checkpoint every N steps (and at the end)")
    keep_last: int = opt(KEEP_LAST, "newest complete saves kept in out_dir; 0 = every one")
    seed: int = opt(1337, "random seed (model init, data order, sampling)")
    device: str = opt("auto", "auto | cpu | cuda | mps")
    compile: typing.Optional[bool] = opt(None, "torch.compile (default: on for CUDA)")
    fsdp: bool = opt(False, "FSDP2 fully_shard per block (under torchrun)")
    peak_flops: float = opt(0.0, "peak FLOP/s of one device, for MFU; 0 = not shown")
    resume: bool = opt(False, "continue from out_dir's checkpoint")


@dataclass
class PretrainConfig(TrainConfig):
    data_dir: str = opt("out/data", "folder written by data.py")
    preset: str = opt("demo", "model size (model.PRESETS)", tuple(PRESETS))
    seq_len: int = opt(256, "long context length (last long_fraction of steps)")
    short_seq_len: int = opt(128, "short context length (first steps); 0 = always seq_len")
    long_fraction: float = opt(0.1, "share of steps at the long context (HCX)")


# ----------------------------------------------------------------------------- devices and ranks
def setup_distributed(device_name="auto"):
    """(device, rank, world_size); under torchrun, joins the process group (nccl or gloo)."""
    if device_name == "auto":
        mps = torch.backends.mps.is_available()
        device_name = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_name == "cuda" else "gloo")
    if device_name == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    return torch.device(device_name), rank, world_size


# ----------------------------------------------------------------------------- checkpoints
# checkpoints.py writes each save into its own step folder and publishes it by one atomic rename:
# a kill at any instant leaves the run folder's `latest` on a complete save (DESIGN.md §1). A save
# holds every RNG state too, so that a resumed run draws exactly what a straight run would.
def rng_state():
    """Every RNG state, as tensors and plain types: a checkpoint loads with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model(ckpt_dir, device="cpu", policy=True):
    """A plain Transformer with a checkpoint's weights, and its config dict (policy: no RM)."""
    state, config = load_checkpoint(ckpt_dir, device)
    if policy and config["model"].get("reward_head"):
        raise DataError(f"{ckpt_dir}: a reward model (no next-token head); pass a language model")
    model = Transformer(ModelConfig(**config["model"]))
    model.load_state_dict(state)
    return model.to(device), config


# ----------------------------------------------------------------------------- the loop
def lr_at(step, cfg):
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


# what the progress bar shows of a step's metrics (margin, reward_acc: the preference losses)
BAR_METRICS = ("loss", "val_loss", "tokens_per_s", "mfu", "margin", "reward_acc")
# the last step's metrics on the closing "done:" line, those a phase logs
DONE_METRICS = "val_loss margin reward_acc judge_confidence capped_share val_win_rate".split()


def lm_loss(model, batch):
    """The default loss: next-token cross-entropy, masked where the batch has a loss_mask."""
    _, loss = model(batch["x"], batch["y"], batch.get("loss_mask"))
    return loss, {}


class Interrupted(SystemExit):
    """Raised after SIGINT/SIGTERM once the checkpoint is saved: exits with 128 + the signal."""

    def __init__(self, message, code):
        super().__init__(code)
        self.message = message

    def __str__(self):
        return self.message


def train(
    model,
    get_batch,
    cfg,
    config_extra,
    *,
    loss_fn=lm_loss,
    val_fn=None,
    tokenizer_path=None,
    device=None,
    rank=0,
    world_size=1,
    log=print,
):
    """The one training loop.

    model:        a plain Transformer on `device`, wrapped here for compile / DDP / FSDP as cfg asks
    get_batch:    get_batch(step, micro) -> batch dict of tensors on device ("x", "y", optional
                  "loss_mask", or whatever loss_fn reads); a deterministic function of (step,
                  micro) for this rank, so that the data cursor of a checkpoint is simply the step
    loss_fn:      loss_fn(model, batch) -> (scalar loss, {metric: float}); default next-token CE
    val_fn:       val_fn(plain_model) -> {metric: float}: every cfg.eval_every steps and at the end,
                  in eval mode without gradients
    config_extra: what config.json records beside the model config (phase, args, special ids)
    Returns the list of logged metric dicts.
    """
    device = device or next(model.parameters()).device
    cuda = device.type == "cuda"
    raw, train_state = model, None
    if cfg.resume:  # weights go into the plain module before it is sharded or wrapped
        train_state = _load_train_state(cfg.out_dir, raw, world_size)
        if train_state is None:  # killed before its first save completed: nothing was lost
            log(f"--resume: no complete save in {cfg.out_dir} yet; starting at step 0")
    start_step = train_state["step"] if train_state else 0
    wrapped = raw
    if cfg.fsdp:  # shards the module in place
        # full (unsharded) state dicts
        from torch.distributed.checkpoint import state_dict as dist_sd
        from torch.distributed.fsdp import fully_shard

        for block in raw.layers:
            fully_shard(block)
        fully_shard(raw)
    elif world_size > 1:
        device_ids = [device.index] if cuda else None
        wrapped = torch.nn.parallel.DistributedDataParallel(raw, device_ids=device_ids)
    use_compile = cfg.compile if cfg.compile is not None else cuda
    if use_compile:
        wrapped = torch.compile(wrapped)

    params = [p for p in raw.parameters() if p.requires_grad]
    decay = {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay}
    no_decay = {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}
    optimizer = torch.optim.AdamW(
        [decay, no_decay], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=cuda
    )
    if train_state is not None:
        if cfg.fsdp:  # shard the full optimizer state back onto this rank
            full = dist_sd.StateDictOptions(full_state_dict=True)
            dist_sd.set_optimizer_state_dict(raw, optimizer, train_state["optimizer"], options=full)
        else:
            optimizer.load_state_dict(train_state["optimizer"])
        set_rng_state(train_state["rng"][rank])
        log(f"resumed from {train_state['found']} at step {start_step}")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    config = dict(config_extra, model=dataclasses.asdict(raw.cfg), train=dataclasses.asdict(cfg))
    if rank == 0:
        os.makedirs(cfg.out_dir, exist_ok=True)
        # what readers.atomic_write leaves (FILE.tmp<pid>) when a kill lands mid-write: metrics'
        # rewrite below, a phase's reports; only rank 0 writes here, and none of it is running
        for leftover in glob.glob(os.path.join(glob.escape(cfg.out_dir), "*.tmp[0-9]*")):
            os.remove(leftover)
        start_metrics(cfg.out_dir, start_step if train_state else None)  # metrics.jsonl(.new)

    def checkpoint(step):
        if cfg.fsdp:  # every rank takes part in gathering the full (unsharded) state
            opts = dist_sd.StateDictOptions(full_state_dict=True, cpu_offload=True)
            model_state = dist_sd.get_model_state_dict(raw, options=opts)
            optim_state = dist_sd.get_optimizer_state_dict(raw, optimizer, options=opts)
        else:
            model_state, optim_state = raw.state_dict(), optimizer.state_dict()
        if world_size > 1:  # every rank's, in rank order
            rngs = [None] * world_size
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        if rank == 0:
            state = {"step": step, "optimizer": optim_state, "rng": rngs, "world_size": world_size}
            state["data_cursor"] = {"step": step}  # get_batch is a function of the step
            saved = dict(config, step=step)
            run_log = metrics_log(cfg.out_dir)  # a fresh run's first save publishes its log too
            save_checkpoint(
                cfg.out_dir, model_state, saved, state, tokenizer_path, cfg.keep_last, run_log
            )
        if world_size > 1:
            dist.barrier()

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    history = []
    flops_per_token = raw.flops_per_token(getattr(cfg, "seq_len", raw.cfg.max_seq_len))
    bar_opts = dict(disable=rank != 0, desc=config_extra.get("phase", "train"), dynamic_ncols=True)
    bar = tqdm(range(start_step, cfg.steps), initial=start_step, total=cfg.steps, **bar_opts)
    try:
        for step in bar:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum, tokens, extra = 0.0, 0, {}
            for micro in range(cfg.grad_accum):
                batch = get_batch(step, micro)
                last = micro == cfg.grad_accum - 1
                with _grad_sync(wrapped, raw, cfg, world_size, enabled=last), autocast:
                    loss, extra = loss_fn(wrapped, batch)
                    (loss / cfg.grad_accum).backward()
                loss_sum += loss.detach().float().item() / cfg.grad_accum
                tokens += batch["x"].numel() if "x" in batch else 0
            # the global norm, clipped unless --grad-clip 0 (a finite loss can have a NaN gradient)
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = float(torch.nn.utils.clip_grad_norm_(raw.parameters(), max_norm))
            if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
                where = "no checkpoint was written"
                if find_checkpoint(cfg.out_dir):
                    where = f"the last good checkpoint in {cfg.out_dir} is left in place"
                raise SystemExit(
                    f"non-finite loss ({loss_sum}) or gradient norm ({grad_norm}) at step "
                    f"{step + 1}: stopping; {where}. Lower --lr, check the data, or --resume."
                )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            row = {
                "step": step + 1,
                "loss": round(loss_sum, 5),
                "lr": lr,
                "step_s": round(dt, 4),
                "tokens_per_s": round(tokens * world_size / dt, 1),
                "flops_per_s": tokens * world_size * flops_per_token / dt,
                "grad_norm": grad_norm,
                **{k: float(v) for k, v in extra.items()},
            }
            if cfg.peak_flops > 0:
                row["mfu"] = row["flops_per_s"] / (cfg.peak_flops * world_size)
            done = step + 1 == cfg.steps
            validate = (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or done
            if val_fn is not None and validate:
                with eval_mode(raw):
                    row.update(val_fn(raw))
            history.append(row)
            if rank == 0:
                with open(metrics_log(cfg.out_dir), "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
                shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in row.items()}
                bar.set_postfix({k: v for k, v in shown.items() if k in BAR_METRICS})
            if world_size > 1:  # every rank must stop at the same step, or the collectives hang
                flag = torch.tensor([stop["signal"] or 0], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop["signal"] = int(flag.item()) or None
            if stop["signal"] is not None:
                checkpoint(step + 1)
                where = f"checkpoint at step {step + 1} in {cfg.out_dir}"
                message = f"stopped by signal {stop['signal']}: {where}; continue with --resume"
                log(message)
                raise Interrupted(message, 128 + stop["signal"])
            if done or (cfg.save_every and (step + 1) % cfg.save_every == 0):
                checkpoint(step + 1)
    finally:
        bar.close()
        for s, h in old_handlers.items():
            signal.signal(s, h)
    if history:
        shown = [f"loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}"]
        shown += [f"{k} {history[-1][k]:.3f}" for k in DONE_METRICS if k in history[-1]]
        log(f"done: {', '.join(shown)}; checkpoint in {cfg.out_dir}")
    return history


@contextlib.contextmanager
def _grad_sync(wrapped, raw, cfg, world_size, enabled):
    """Skip the gradient all-reduce on non-final micro-steps (it happens once, on the last)."""
    if enabled or world_size == 1:
        yield
    elif cfg.fsdp:
        raw.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            raw.set_requires_gradient_sync(True)
    else:
        with getattr(wrapped, "_orig_mod", wrapped).no_sync():  # DDP, maybe inside torch.compile
            yield


# train_state.pt of the old flat layout holds numpy's RNG state as an array: these rebuild it
NUMPY_ARRAY = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), np.ndarray(0).__reduce__()[0]]


def _load_train_state(out_dir, raw, world_size):
    """Load the newest complete save's weights into the plain model and return its train_state
    (optimizer, step, RNGs), or None when the run folder holds no complete save yet."""
    found = find_checkpoint(out_dir)
    if found is None:
        return None
    path = os.path.join(found, "train_state.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--resume: {path} not found (not saved by a training run); start "
            f"without --resume, or point --out-dir at a run"
        )
    train_state = load_tensors(path, allow=NUMPY_ARRAY)
    state, config = load_checkpoint(found, device="cpu")
    if train_state.get("checkpoint_id") != config.get("checkpoint_id"):  # the old flat layout
        raise RuntimeError(
            f"{found}: model.pt/config.json and train_state.pt come from different "
            "saves (an interrupted save of the old flat layout); start again"
        )
    if train_state["world_size"] != world_size:
        raise RuntimeError(
            f"{found}: saved with {train_state['world_size']} ranks, resuming with "
            f"{world_size}; exact resume needs the same number of ranks"
        )
    raw.load_state_dict(state)
    train_state["found"] = found
    return train_state


# ----------------------------------------------------------------------------- pretraining
def main(argv=None):
    cfg = parse_config(PretrainConfig, argv)
    device, rank, world_size = setup_distributed(cfg.device)
    log = print if rank == 0 else (lambda *a, **k: None)
    from data import PretrainBatches, context_length_at, val_batches

    meta_path = os.path.join(cfg.data_dir, "meta.json")
    if not os.path.exists(meta_path):
        raise SystemExit(f"{meta_path} not found: run `python data.py` first (or pass --data-dir)")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("tokenizer_sha256") not in (None, file_sha256(meta.get("tokenizer", ""))):
        raise SystemExit(f"{meta['tokenizer']} is not the one data.py read for {cfg.data_dir}")
    log(f"config: {json.dumps(dataclasses.asdict(cfg))}")
    torch.manual_seed(cfg.seed)
    model_cfg = config_from_preset(
        cfg.preset, vocab_size=meta["vocab_size"], max_seq_len=max(cfg.seq_len, cfg.short_seq_len)
    )
    model = Transformer(model_cfg).to(device)
    log(f"model: {cfg.preset}, {model.num_params() / 1e6:.2f}M parameters, {model_cfg}")

    path = os.path.join(cfg.data_dir, "train.bin")
    batches = PretrainBatches(path, cfg.batch_size, seed=cfg.seed, rank=rank, world_size=world_size)

    def get_batch(step, micro):
        seq_len = cfg.seq_len
        if cfg.short_seq_len > 0:  # HCX: the short context first, the long one for the last steps
            seq_len = context_length_at(
                step, cfg.steps, cfg.short_seq_len, cfg.seq_len, cfg.long_fraction
            )
        x, y = batches.get(step * cfg.grad_accum + micro, seq_len)
        return {"x": x.to(device), "y": y.to(device)}

    def val_fn(m):
        val_bin = os.path.join(cfg.data_dir, "val.bin")  # train() calls this without gradients
        val = val_batches(val_bin, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
        losses = [m(x.to(device), y.to(device))[1].item() for x, y in val]
        return {"val_loss": sum(losses) / max(1, len(losses))}

    train(
        model,
        get_batch,
        cfg,
        {"phase": "pretrain", "special_ids": meta.get("special_ids", {})},
        val_fn=val_fn,
        tokenizer_path=meta.get("tokenizer"),
        device=device,
        rank=rank,
        world_size=world_size,
        log=log,
    )
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
