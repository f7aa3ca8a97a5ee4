"""sft.py — multi-turn chat supervised fine-tuning (HyperCLOVA X §2.2.1).

HyperCLOVA X marks turns with <|system|> <|user|> <|assistant|> <|endofturn|>, trains only on the
assistant turns, and batches sequences of similar length under a fixed token budget. Here:
- conversations are rendered by the tokenizer's chat renderer into (ids, loss_mask) in token space
  (DESIGN.md §2): the mask is 1 on every assistant turn's content and its closing <|endofturn|>, so
  the model learns to stop; padding uses pad_id (never eos) and is ignored by the loss;
- batches are length-grouped under `--max-tokens` (rows x longest row);
- every step also learns next tokens of pretraining text (`--lm-mix`, data.py's train.bin), as
  InstructGPT mixes pretraining gradients into fine-tuning: chat data does not erase general text
  (SFT's val bpb 2.34 with it, 3.46 without, pretraining's 2.22; README, Results);
- training runs through pretrain.py's one loop (`train`), starting from a pretrained checkpoint.
The SFT model is SELF-JUDGE's first baseline and the start of the offline DPO baseline. The
batches of the later phases that learn from (prompt, chosen, rejected) pairs (DPO, SELF-JUDGE, the
reward model) are built here too (build_pair_batch, offline_batches), below all of them.

    python sft.py                              # embedded task world, from out/pretrain -> out/sft
    python sft.py --data chats.jsonl,hh.jsonl  # your data: messages layout or HH-RLHF (chosen side)
    python sft.py --lm-mix 0                   # chat loss alone (no data.py folder needed)
    torchrun --nproc_per_node 2 sft.py         # data parallel

--data is read by readers.read_conversations (the messages layout or HH-RLHF, DESIGN.md §4): every
bad record stops the read with `ValueError("file:line: what is wrong")`; with --skip-bad it is
skipped, counted, and a one-line summary is printed at the end.
"""

import functools
import json
import os
import random
import zlib
from dataclasses import dataclass

import torch

from model import right_pad
from pretrain import TrainConfig, find_checkpoint, load_model, lm_loss, setup_distributed, train
from readers import file_sha256, opt, parse_config, read_conversations, run_main


@dataclass
class SFTConfig(TrainConfig):
    out_dir: str = opt("out/sft", "checkpoint folder this phase writes")
    init_from: str = opt("out/pretrain", "pretrained checkpoint folder to start from")
    data: str = opt(
        "tasks", "'tasks' (task world) or comma-separated .jsonl: messages or HH-RLHF (chosen side)"
    )
    tasks_dir: str = opt("out/tasks", "folder written by tasks.py (for --data tasks)")
    skip_bad: bool = opt(False, "skip (and count) bad records instead of stopping")
    max_tokens: int = opt(2048, "token budget per micro-batch (rows x longest row)")
    seq_len: int = opt(256, "longest conversation in tokens; longer ones are truncated")
    val_fraction: float = opt(0.02, "share of conversations held out for val loss")
    lm_mix: float = opt(0.5, "weight of a next-token loss on pretraining text per step; 0 = off")
    lm_data: str = opt("out/data", "--lm-mix: data.py's folder (its train.bin)")
    lm_batch: int = opt(2, "--lm-mix: pretraining windows per micro-batch")
    lm_seq_len: int = opt(0, "--lm-mix: tokens per pretraining window; 0 = --seq-len")
    steps: int = 200
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    eval_every: int = 0
    save_every: int = 0


def encode_conversations(conversations, tokenizer, max_len):
    """Render each conversation to (ids, mask). Truncation rule: a conversation longer than
    max_len + 1 tokens keeps its first max_len + 1 tokens (the system prompt and earliest turns
    survive, a cut reply loses its end-of-turn); one left with no assistant token to learn is
    dropped. Both are counted."""
    examples, truncated, dropped = [], 0, 0
    for messages in conversations:
        ids, mask = tokenizer.render_chat(messages)
        if len(ids) > max_len + 1:
            ids, mask, truncated = ids[: max_len + 1], mask[: max_len + 1], truncated + 1
        if sum(mask[1:]) == 0:
            dropped += 1
            continue
        examples.append((ids, mask))
    return examples, {"examples": len(examples), "truncated": truncated, "dropped": dropped}


def length_grouped_batches(units, max_tokens, seed, epoch, window=64):
    """HCX-style batching over units, a unit being a list of (ids, mask) examples that must share a
    batch (one conversation in SFT; a judged pair's two orders in JSFT): shuffle, sort by length
    inside windows of `window` units, cut batches of whole units whose rows x longest row stays
    within max_tokens, shuffle the batch order.
    Deterministic in (seed, epoch); returns unit indices."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(units)))
    rng.shuffle(order)
    longest_row = [max(len(ids) for ids, _ in unit) - 1 for unit in units]
    batches = []
    for w in range(0, len(order), window):
        batch, rows, longest = [], 0, 0
        for u in sorted(order[w : w + window], key=longest_row.__getitem__):
            if batch and max(longest, longest_row[u]) * (rows + len(units[u])) > max_tokens:
                batches.append(batch)
                batch, rows, longest = [], 0, 0
            batch.append(u)
            rows, longest = rows + len(units[u]), max(longest, longest_row[u])
        batches.append(batch)
    rng.shuffle(batches)
    return batches


def collate(examples, pad_id):
    """(ids, mask) rows -> x, y, loss_mask, each (B, T) right-padded with pad_id;
    y is -100 on padding."""
    longest = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    y = torch.full((len(examples), longest), -100, dtype=torch.long)
    loss_mask = torch.zeros((len(examples), longest))
    for row, (ids, mask) in enumerate(examples):
        n = len(ids) - 1
        x[row, :n] = torch.tensor(ids[:-1])
        y[row, :n] = torch.tensor(ids[1:])
        loss_mask[row, :n] = torch.tensor(mask[1:], dtype=torch.float)
    return {"x": x, "y": y, "loss_mask": loss_mask}


def batch_source(units, cfg, pad_id, device, rank=0, world_size=1, window=64):
    """get_batch(step, micro) for the shared loop: a deterministic function of the step (so resume
    is exact). Batches are numbered across epochs; rank r takes every world_size-th one."""

    @functools.cache  # each epoch's batches, computed once
    def epoch_batches(epoch):
        return length_grouped_batches(units, cfg.max_tokens, cfg.seed, epoch, window)

    def get_batch(step, micro):
        k, epoch = (step * cfg.grad_accum + micro) * world_size + rank, 0
        while k >= len(epoch_batches(epoch)):
            k, epoch = k - len(epoch_batches(epoch)), epoch + 1
        batch = collate([example for u in epoch_batches(epoch)[k] for example in units[u]], pad_id)
        return {name: t.to(device) for name, t in batch.items()}

    return get_batch


def with_lm_mix(get_batch, cfg, tokenizer, device, rank=0, world_size=1):
    """(get_batch, loss_fn) for the loop. With --lm-mix each batch also carries pretraining windows
    ("lm_x", "lm_y", data.py's train.bin, resumable by step like pretraining's) and the loss is chat
    loss + lm_mix * their next-token loss; without, the loop's default loss (pretrain.lm_loss)."""
    if cfg.lm_mix <= 0:
        return get_batch, lm_loss
    from data import PretrainBatches

    meta_path = os.path.join(cfg.lm_data, "meta.json")
    if not os.path.exists(meta_path):
        raise SystemExit(
            f"--lm-mix {cfg.lm_mix}: {meta_path} not found: run `python data.py`, "
            "pass --lm-data (data.py's folder) or turn the mix off with --lm-mix 0"
        )
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    if meta.get("tokenizer_sha256") not in (None, file_sha256(tokenizer.model_path)):
        raise SystemExit(
            f"--lm-mix: another tokenizer than {tokenizer.model_path} wrote {meta_path}: rebuild "
            "it with this one (data.py --tokenizer) or turn the mix off with --lm-mix 0"
        )
    train_bin = os.path.join(cfg.lm_data, "train.bin")
    windows = PretrainBatches(train_bin, cfg.lm_batch, cfg.seed, rank, world_size)  # resumable

    def mixed_batch(step, micro):
        x, y = windows.get(step * cfg.grad_accum + micro, cfg.lm_seq_len or cfg.seq_len)
        return {**get_batch(step, micro), "lm_x": x.to(device), "lm_y": y.to(device)}

    def mixed_loss(model, batch):
        _, chat = model(batch["x"], batch["y"], batch["loss_mask"])
        _, text = model(batch["lm_x"], batch["lm_y"])
        return chat + cfg.lm_mix * text, {"chat_loss": chat.item(), "lm_loss": text.item()}

    return mixed_batch, mixed_loss


def masked_val_loss(examples, pad_id, device, max_tokens):
    """val_fn for the loop (which calls it without gradients): token-weighted loss over the
    held-out examples' assistant tokens."""

    def val_fn(model):
        total, count = 0.0, 0.0
        for batch in length_grouped_batches([[e] for e in examples], max_tokens, 0, 0):
            rows = [examples[i] for i in batch]
            b = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
            n = b["loss_mask"].sum().item()
            total += model(b["x"], b["y"], b["loss_mask"])[1].item() * n
            count += n
        return {"val_loss": total / max(count, 1.0)}

    return val_fn


def split_val(examples, fraction, seed):
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(len(examples) * fraction)
    return [examples[i] for i in order[n_val:]], [examples[i] for i in order[:n_val]]


def prepare(cfg, tokenizer, conversations, log=print):
    """Conversations -> (train examples, val examples), with the truncation counts logged."""
    examples, counts = encode_conversations(conversations, tokenizer, cfg.seq_len)
    if not examples:
        raise SystemExit(f"--data {cfg.data}: no conversation with an assistant turn to train on")
    log(
        f"conversations: {counts['examples']} kept, {counts['truncated']} truncated to "
        f"--seq-len {cfg.seq_len}, {counts['dropped']} dropped (nothing left to learn)"
    )
    return split_val(examples, cfg.val_fraction, cfg.seed)


def load_start(cfg, device):
    """The start checkpoint of a fine-tuning phase: (model, tokenizer, tokenizer path),
    with --seq-len (and --lm-seq-len) checked."""
    from tokenizer import Tokenizer

    ckpt = find_checkpoint(cfg.init_from) or cfg.init_from  # a run folder: its newest complete save
    tokenizer_path = os.path.join(ckpt, "tokenizer.model")
    model, _ = load_model(ckpt, device)
    for flag, n in (("--seq-len", cfg.seq_len), ("--lm-seq-len", getattr(cfg, "lm_seq_len", 0))):
        if n > model.cfg.max_seq_len:
            raise SystemExit(
                f"{flag} {n} exceeds the model's max_seq_len "
                f"{model.cfg.max_seq_len} ({cfg.init_from}/config.json); lower {flag}"
            )
    return model, Tokenizer(tokenizer_path), tokenizer_path


# --- preference pairs: (prompt, chosen, rejected) batches for DPO and the reward model ---
def seed_of(*parts) -> int:
    """A stable 32-bit seed from any parts, e.g. (seed, step, micro, rank)."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def prompt_stream(n_items, seed):
    """Item index at global position k: epoch k // n_items walks a seeded permutation."""

    @functools.lru_cache(maxsize=4)
    def permutation(epoch):
        order = list(range(n_items))
        random.Random(seed_of(seed, "epoch", epoch)).shuffle(order)
        return order

    return lambda k: permutation(k // n_items)[k % n_items]


def positions(cfg, step, micro, rank, world_size):
    """Global stream positions of this rank's micro-batch:
    every (step, micro, rank) gets its own."""
    start = ((step * cfg.grad_accum + micro) * world_size + rank) * cfg.batch_size
    return range(start, start + cfg.batch_size)


def response_batch(prompt_ids, responses, pad_id):
    """Rows prompt + response, right-padded with pad_id -> ids (N, T); mask (N, T) is 1 exactly on
    the response tokens (incl. a sampled end of turn). "x" is ids again, for the loop's tokens/s."""
    ids = right_pad([p + r for p, r in zip(prompt_ids, responses)], pad_id)
    mask = right_pad([[0] * len(p) + [1] * len(r) for p, r in zip(prompt_ids, responses)], 0)
    return {"ids": ids, "mask": mask, "x": ids}


def build_pair_batch(prompt_ids, chosen, rejected, pad_id):
    """B prompts with a chosen and a rejected response each -> response_batch (2B, T): rows 0..B-1
    are prompt + chosen, rows B..2B-1 prompt + rejected."""
    return response_batch(prompt_ids + prompt_ids, chosen + rejected, pad_id)


def tokenize_pairs(tokenizer, pairs, max_len):
    """PreferencePairs -> (prompt ids, chosen ids, rejected ids), responses as encode(text) + [eot].
    Pairs longer than max_len are left out and counted."""
    out, dropped = [], 0
    for pair in pairs:
        prompt = tokenizer.render_chat(pair.context, add_generation_prompt=True)[0]
        chosen = tokenizer.encode(pair.chosen) + [tokenizer.eot_id]
        rejected = tokenizer.encode(pair.rejected) + [tokenizer.eot_id]
        if len(prompt) + max(len(chosen), len(rejected)) > max_len:
            dropped += 1
        else:
            out.append((prompt, chosen, rejected))
    return out, dropped


def offline_batches(tokenized, cfg, pad_id, device, rank=0, world_size=1):
    """get_batch(step, micro) for the offline DPO baseline: a seeded walk over fixed pairs."""
    item = prompt_stream(len(tokenized), cfg.seed)

    def get_batch(step, micro):
        rows = [tokenized[item(k)] for k in positions(cfg, step, micro, rank, world_size)]
        prompts, chosen, rejected = (list(x) for x in zip(*rows))
        batch = build_pair_batch(prompts, chosen, rejected, pad_id)
        batch["stats"] = {
            "len_chosen": sum(map(len, chosen)) / len(chosen),
            "len_rejected": sum(map(len, rejected)) / len(rejected),
        }
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    return get_batch


def main(argv=None):
    cfg = parse_config(SFTConfig, argv)
    device, rank, world_size = setup_distributed(cfg.device)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"config: {json.dumps(cfg.__dict__)}")
    model, tokenizer, tokenizer_path = load_start(cfg, device)
    conversations = read_conversations(cfg.data, cfg.tasks_dir, cfg.skip_bad)
    train_examples, val_examples = prepare(cfg, tokenizer, conversations, log)
    torch.manual_seed(cfg.seed)
    units = [[e] for e in train_examples]  # one conversation per unit
    get_batch = batch_source(units, cfg, tokenizer.pad_id, device, rank, world_size)
    get_batch, loss_fn = with_lm_mix(get_batch, cfg, tokenizer, device, rank, world_size)
    val_fn = None
    if val_examples:
        val_fn = masked_val_loss(val_examples, tokenizer.pad_id, device, cfg.max_tokens)
    extra = {"phase": "sft", "init_from": cfg.init_from, "special_ids": tokenizer.special_ids()}
    setup = dict(tokenizer_path=tokenizer_path, device=device, rank=rank, world_size=world_size)
    train(model, get_batch, cfg, extra, loss_fn=loss_fn, val_fn=val_fn, log=log, **setup)
    if world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
