"""Worker for the DDP test: `python ddp_worker.py OUT BATCH` alone or under torchrun (gloo, CPU).

Trains a tiny model a few steps through pretrain.train on data.PretrainBatches over a synthetic
token file, saves the checkpoint to OUT and the windows this rank saw to OUT/seen_rank{r}.pt."""

import os
import sys

import numpy as np
import torch

from data import PretrainBatches
from model import Transformer, config_from_preset
from pretrain import TrainConfig, setup_distributed, train

out_dir, batch_size = sys.argv[1], int(sys.argv[2])
device, rank, world_size = setup_distributed("cpu")
os.makedirs(out_dir, exist_ok=True)
bin_path = os.path.join(out_dir, f"tokens_rank{rank}.bin")
rng = np.random.default_rng(0)
tokens = np.where(
    rng.random(8192) < 0.9, np.arange(8192) % 13 + 3, rng.integers(0, 64, 8192)
).astype(np.uint16)
tokens.tofile(bin_path)

torch.manual_seed(0)
model = Transformer(config_from_preset("tiny", vocab_size=64, max_seq_len=16))
batches = PretrainBatches(bin_path, batch_size, seed=0, rank=rank, world_size=world_size)
seen = []


def get_batch(step, micro):
    x, y = batches.get(step, 16)
    seen.append(x.clone())
    return {"x": x, "y": y}


cfg = TrainConfig(
    out_dir=out_dir,
    steps=4,
    batch_size=batch_size,
    lr=3e-3,
    warmup_steps=1,
    eval_every=0,
    save_every=0,
    device="cpu",
    compile=False,
)
train(model, get_batch, cfg, {"phase": "ddp-test"}, rank=rank, world_size=world_size, device=device)
torch.save(seen, os.path.join(out_dir, f"seen_rank{rank}.pt"))
if world_size > 1:
    torch.distributed.destroy_process_group()
