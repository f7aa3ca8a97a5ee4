"""reward_model.py: the separate reward model, the judge that SELF-JUDGE does away with.

On-policy alignment as HyperCLOVA X's RLHF does it (HCX technical report §2.2) needs a second
network: a reward model trained on human preference pairs, which scores the policy's samples.
SELF-JUDGE (Lee et al., ACL 2024, §1 and §3) keeps on-policy learning but lets the policy's own JSFT
judge replace that model. This script builds the arm it is measured against:

  the model   the SFT transformer with its LM head replaced by one scalar per position
              (ModelConfig.reward_head); the reward of prompt + response is the scalar at the last
              real token (sequence_rewards). The head starts at zero: every reward is 0.
  the loss    Bradley-Terry: p(chosen > rejected) = sigmoid(r_chosen - r_rejected), trained with
              -log sigmoid(r_chosen - r_rejected) (Ouyang et al. 2022, eq. 1), on the same
              preference pairs JSFT learns to judge (and the offline DPO baseline learns from).
  the loop    pretrain.train: checkpoints, --resume, torchrun DDP, as every phase.

Its accuracy on held-out pairs is printed at the end and written to <out-dir>/rm_eval.json;
evaluate.py puts it beside the JSFT judge's, on held-out and on on-policy pairs. The on-policy arm
it judges is `self_judge.py --judge reward`; the checkpoint is a normal minihcx one whose
config.json says phase "reward_model" and model.reward_head true (convert.py exports it as a Hugging
Face LlamaForSequenceClassification).

    python reward_model.py                        # out/sft + the task world's pairs
                                                  # -> out/reward_model
    python reward_model.py --prefs a.jsonl,b.jsonl --steps 300
    python self_judge.py --judge reward --out-dir out/onpolicy_rm    # on-policy DPO judged by it
"""

import dataclasses
import filecmp
import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from jsft import context_lang
from model import Transformer, eval_mode, right_pad, unwrap
from pretrain import TrainConfig, find_checkpoint, load_model, setup_distributed, train
from readers import opt, parse_config, read_preferences, run_main
from report import report_heldout
from sft import load_start, offline_batches, tokenize_pairs


@dataclass
class RewardConfig(TrainConfig):
    out_dir: str = opt("out/reward_model", "checkpoint folder this phase writes")
    init_from: str = opt("out/sft", "start checkpoint (its LM head is replaced by the scalar head)")
    tasks_dir: str = opt("out/tasks", "folder written by tasks.py: the default pairs")
    # '' = the pairs JSFT learns to judge, so both judges learn from the same data:
    # <tasks-dir>/prefs_train.jsonl, ultrafeedback_train.jsonl, out/jsft/sampled_prefs.jsonl if any
    prefs: str = opt(
        "",
        "pair files, comma-separated (readers.read_preferences layout); '' = the pairs JSFT judges",
    )
    eval_prefs: str = opt(
        "", "held-out pairs for accuracy; '' = <tasks-dir>/prefs_eval.jsonl, 'none' = skip"
    )
    skip_bad: bool = opt(False, "skip (and count) malformed preference records instead of stopping")
    seq_len: int = opt(256, "longest prompt + response in tokens; longer pairs are left out")
    steps: int = 200
    batch_size: int = opt(16, "pairs per micro-batch per rank (each gives 2 sequences)")
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 10
    weight_decay: float = 0.0
    eval_every: int = 0
    save_every: int = 100


def pref_paths(cfg):
    if cfg.prefs:
        return cfg.prefs.split(",")
    paths = [
        os.path.join(cfg.tasks_dir, n) for n in ("prefs_train.jsonl", "ultrafeedback_train.jsonl")
    ]
    sampled = "out/jsft/sampled_prefs.jsonl"
    return paths + [sampled] if os.path.exists(sampled) else paths


def with_reward_head(model):
    """A reward model from a language model: the same transformer, the LM head replaced by a scalar
    head initialised to zero (so every reward starts at 0 and the loss at log 2)."""
    rm = Transformer(dataclasses.replace(model.cfg, reward_head=True, tie_embeddings=False))
    body = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = rm.load_state_dict(body, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    torch.nn.init.zeros_(rm.lm_head.weight)
    return rm.to(model.lm_head.weight.device)


def sequence_rewards(model, ids, real):
    """A reward model's (ModelConfig.reward_head) scalar at the last real token of each sequence.
    ids (B, T) long; real (B, T) 0/1, one contiguous run of 1s per row: right- or left-padded alike.
    Each row is first rolled so that its tokens start at position 0 (left padding moves to the end),
    so it gets the positions and causal context it has alone. Returns (B,) float; differentiable."""
    B, T = ids.shape
    first = real.argmax(dim=1)  # (B,) index of the first real token: 0 when right-padded
    order = (torch.arange(T, device=ids.device)[None, :] + first[:, None]) % T  # (B, T)
    ids, real = ids.gather(1, order), real.gather(1, order)
    values, _ = model(ids)  # (B, T, 1)
    last = real.sum(dim=1) - 1  # (B,) the last real position, now that every row starts at 0
    return values[torch.arange(B, device=ids.device), last, 0].float()


def bt_loss(r_chosen, r_rejected):
    """Bradley-Terry loss, mean over pairs of -log sigmoid(r_chosen - r_rejected); each (B,).
    Returns (loss, metrics): accuracy (share with r_chosen > r_rejected) and mean margin."""
    margin = r_chosen - r_rejected  # (B,)
    metrics = {"reward_acc": (margin > 0).float().mean().item(), "margin": margin.mean().item()}
    return -F.logsigmoid(margin).mean(), metrics


def bt_loss_fn(model, batch):
    """loss_fn for the shared loop on sft.build_pair_batch batches: rows 0..B-1 prompt +
    chosen, B..2B-1 prompt + rejected, right-padded; the reward is read at each response's end."""
    ids, mask = batch["ids"], batch["mask"]  # (2B, T); mask: 1 on the response tokens
    T = ids.size(1)
    last = T - 1 - mask.flip(1).argmax(dim=1)  # (2B,) the last response token
    # prompt + response
    real = (torch.arange(T, device=ids.device)[None, :] <= last[:, None]).long()
    r = sequence_rewards(model, ids, real)  # (2B,)
    B = r.size(0) // 2
    return bt_loss(r[:B], r[B:])


def rewards_of(rm, sequences, pad_id, batch_size=32):
    """A reward model's scalar for each id list (prompt + reply): right-padded batches, similar
    lengths together, in eval mode. -> (N,) float tensor."""
    core = unwrap(rm)
    device = next(core.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    out = torch.empty(len(sequences))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids = right_pad([sequences[i] for i in rows], pad_id)
        real = right_pad([[1] * len(sequences[i]) for i in rows], 0)  # 1 on each row's tokens
        with eval_mode(core):
            out[rows] = sequence_rewards(core, ids.to(device), real.to(device)).cpu()
    return out


def reply_turn_ids(tokenizer, reply):
    """A reply as the assistant turn after its prompt: text -> encode(text) + [eot], as the reward
    model trained (sft.tokenize_pairs); sampled ids as drawn (their eot where one was sampled, none
    where the length cap cut them), as SELF-JUDGE's loop hands them to a judge."""
    if isinstance(reply, str):
        return tokenizer.encode(reply) + [tokenizer.eot_id]
    return [int(i) for i in reply]


def reward_judge(rm, tokenizer, batch_size=32):
    """judge_fn with a separate reward model (reward_model.py): each reply is scored alone, at its
    last token, and score_a = sigmoid(r(a) - r(b)) is the Bradley-Terry probability that a is
    better. It reads no order, so both orders give the same verdict. Replies: text (encoded, then
    the end of turn, as the reward model was trained) or sampled id lists (spliced as they are:
    reply_turn_ids)."""

    def judge_fn(contexts, pairs):
        seqs = []  # a0 b0 a1 b1 ...: both replies after their context's prompt, rendered once
        for context, pair in zip(contexts, pairs):
            prompt = tokenizer.render_chat(context, add_generation_prompt=True)[0]
            seqs += [prompt + reply_turn_ids(tokenizer, reply) for reply in pair]
        r = rewards_of(rm, seqs, tokenizer.pad_id, batch_size)
        score_a = torch.sigmoid(r[0::2] - r[1::2]).tolist()
        a_better = [p > 0.5 for p in score_a]
        return {
            "score_a": score_a,
            "winners": [int(p < 0.5) for p in score_a],
            "first_order_a": a_better,
            "second_order_a": a_better,
            "rewards": r.view(-1, 2).tolist(),
        }

    return judge_fn


def load_reward_model(path, tokenizer_path, device):
    """The reward model checkpoint at path, checked to be one and, given the policy's
    tokenizer_path, to share that tokenizer
    (the judge reads the policy's sampled ids as they are)."""
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise SystemExit(
            f"--reward-model {path}: no checkpoint there; run `python reward_model.py` first"
        )
    rm, config = load_model(ckpt, device, policy=False)
    if not rm.cfg.reward_head:
        raise SystemExit(
            f"--reward-model {path}: a {config.get('phase')} checkpoint, "
            "not a reward model (config.json model.reward_head is false); "
            "train one with reward_model.py"
        )
    if tokenizer_path and not filecmp.cmp(
        os.path.join(ckpt, "tokenizer.model"), tokenizer_path, shallow=False
    ):
        raise SystemExit(
            f"--reward-model {path}: its tokenizer.model differs from the policy's "
            f"({tokenizer_path}); train the reward model from the same SFT checkpoint"
        )
    return rm.eval().requires_grad_(False)


def reward_accuracy(rm, tokenizer, pairs, batch_size=32):
    """Share of PreferencePairs whose chosen reply gets the higher reward (an exact tie counts
    half), overall and per context language. The reward model reads no order: there is no position
    bias to measure."""
    verdict = reward_judge(rm, tokenizer, batch_size)(
        [p.context for p in pairs], [(p.chosen, p.rejected) for p in pairs]
    )
    right = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in verdict["rewards"]]
    langs = [context_lang(p.context) for p in pairs]

    # jsft.judge_accuracy's keys: with no order to read, every order scores the same
    def summary(rs):
        acc = sum(rs) / len(rs)
        return {
            "n": len(rs),
            "acc": acc,
            "acc_chosen_first": acc,
            "acc_chosen_second": acc,
            "consistency": 1.0,
            "order_free": True,
        }

    return dict(
        summary(right),
        by_lang={
            g: summary([r for r, x in zip(right, langs) if x == g]) for g in sorted(set(langs))
        },
    )


def main(argv=None):
    cfg = parse_config(RewardConfig, argv)
    device, rank, world_size = setup_distributed(cfg.device)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"config: {json.dumps(dataclasses.asdict(cfg))}")
    eval_path = cfg.eval_prefs or os.path.join(cfg.tasks_dir, "prefs_eval.jsonl")
    paths = pref_paths(cfg)
    for path in paths + ([] if cfg.eval_prefs == "none" else [eval_path]):
        if not os.path.exists(path):
            raise SystemExit(
                f"{path} not found: run `python tasks.py` first, or pass --prefs / --eval-prefs"
            )
    lm, tokenizer, tokenizer_path = load_start(cfg, device)
    model = with_reward_head(lm)
    del lm
    pairs = [p for path in paths for p in read_preferences(path, cfg.skip_bad, seed=cfg.seed)]
    tokenized, dropped = tokenize_pairs(tokenizer, pairs, cfg.seq_len)
    if not tokenized:
        raise SystemExit(f"{','.join(paths)}: no preference pair fits --seq-len {cfg.seq_len}")
    log(
        f"{len(tokenized)} pairs from {', '.join(paths)}"
        + (f" ({dropped} longer than {cfg.seq_len} tokens left out)" if dropped else "")
    )
    eval_pairs = (
        [] if cfg.eval_prefs == "none" else read_preferences(eval_path, cfg.skip_bad, seed=cfg.seed)
    )
    last = {}

    def val_fn(m):
        last["result"] = reward_accuracy(m, tokenizer, eval_pairs)
        return {"val_acc": last["result"]["acc"]}

    torch.manual_seed(cfg.seed)
    get_batch = offline_batches(tokenized, cfg, tokenizer.pad_id, device, rank, world_size)
    extra = {
        "phase": "reward_model",
        "head": "bradley-terry scalar at the last token",
        "init_from": cfg.init_from,
        "special_ids": tokenizer.special_ids(),
    }
    train(
        model,
        get_batch,
        cfg,
        extra,
        loss_fn=bt_loss_fn,
        val_fn=val_fn if eval_pairs else None,
        tokenizer_path=tokenizer_path,
        device=device,
        rank=rank,
        world_size=world_size,
        log=log,
    )
    if eval_pairs and rank == 0:
        result = last.get("result") or reward_accuracy(model, tokenizer, eval_pairs)
        report_heldout(result, eval_path, os.path.join(cfg.out_dir, "rm_eval.json"), log)
    if world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
