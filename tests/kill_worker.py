"""Worker for the kill tests: a tiny model on a synthetic token file, saving every step, always
with --resume. `run(OUT, STEPS)` in a process of its own, or `python kill_worker.py OUT STEPS` under
torchrun (gloo), which also writes OUT.pid<rank> once training is about to start."""

import os
import sys

import numpy as np
import torch
import torch._dynamo  # noqa: F401  AdamW imports it (3 s): once in the fork server, not per kill

from data import PretrainBatches
from model import Transformer, config_from_preset
from pretrain import TrainConfig, setup_distributed, train


def run(out_dir, steps, rank=0, world_size=1):
    torch.set_num_threads(1)
    bin_path = f"{out_dir}.tokens{rank}.bin"  # beside the run folder, written once
    if not os.path.exists(bin_path):
        rng = np.random.default_rng(0)
        noise = rng.integers(0, 64, 8192)
        tokens = np.where(rng.random(8192) < 0.9, np.arange(8192) % 13 + 3, noise).astype(np.uint16)
        tokens.tofile(bin_path + ".tmp")
        os.replace(bin_path + ".tmp", bin_path)
    torch.manual_seed(0)
    model = Transformer(config_from_preset("tiny", vocab_size=64, max_seq_len=16))
    batches = PretrainBatches(bin_path, 4, seed=0, rank=rank, world_size=world_size)

    def get_batch(step, micro):
        x, y = batches.get(step, 16)
        return {"x": x, "y": y}

    cfg = TrainConfig(
        out_dir=out_dir,
        steps=steps,
        batch_size=4,
        lr=3e-3,
        warmup_steps=2,
        eval_every=0,
        save_every=1,
        device="cpu",
        compile=False,
        resume=True,
    )
    if world_size > 1:
        with open(f"{out_dir}.pid{rank}", "w") as fh:
            fh.write(str(os.getpid()))
    train(
        model,
        get_batch,
        cfg,
        {"phase": "kill-test"},
        rank=rank,
        world_size=world_size,
        log=lambda *a: None,
    )


if __name__ == "__main__":
    device, rank, world_size = setup_distributed("cpu")
    run(sys.argv[1], int(sys.argv[2]), rank, world_size)
    if world_size > 1:
        torch.distributed.destroy_process_group()
