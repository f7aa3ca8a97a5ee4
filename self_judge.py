"""self_judge.py — SELF-JUDGE: on-policy self-judgment DPO and the offline DPO baseline (Lee et al.,
"Aligning Large Language Models by On-Policy Self-Judgment", ACL 2024, §3).

SELF-JUDGE (§3.2): the policy starts as the JSFT model, which can both answer and judge. Each step
  1. takes a batch of prompts and samples two responses to each from the current policy
     (KV-cache sampler, top-p 0.9, temperature 1.0, capped length);
  2. the judge, a frozen copy of the JSFT model (static judge, the paper's default;
     --dynamic-judge judges with the current policy instead), compares the two responses in both
     orders and averages;
  3. the preferred response is "chosen", the other "rejected", built in token space: prompt ids +
     sampled ids, never decoded and re-encoded;
  4. a DPO loss (sigmoid / hinge / ipo) on the summed response log-probs of policy and reference
     (the same frozen JSFT copy). A tie teaches nothing: identical samples, and verdicts within
     --min-margin of 0.5, are left out of the loss (weight 0; "kept_share" in the log).
No reward model, no verifier: the model judges itself. Two other judges plug into the same loop, so
that only the judge differs between the arms: `--judge reward` is the baseline SELF-JUDGE removes,
on-policy DPO judged by a separate Bradley-Terry reward model (reward_model.reward_judge; a third
model held in memory); `--judge verifier` is the oracle arm, an evaluation device only: the task
world's verifier as the judge (tasks.verifier_judge), the upper bound of on-policy DPO at this
scale. `--offline` is the DPO baseline (§4.1): the same loss from the SFT model on a fixed dataset
of (chosen, rejected) pairs.
Self-rejection (§3.3) is inference: `python chat.py --best-of N` (chat.tournament, chat.best_of_n);
its knockout rounds are `knockout` here, which evaluate.py's N-curve runs too.

Run (prompts and pairs from out/tasks, written by tasks.py):
    python self_judge.py             # SELF-JUDGE: out/jsft + prompts_train.jsonl -> out/self_judge
    python self_judge.py --offline   # DPO baseline: out/sft + prefs_train.jsonl -> out/dpo
    python self_judge.py --dynamic-judge           # judge with the current policy (paper ablation)
    python self_judge.py --judge verifier --out-dir out/oracle   # the oracle arm (upper bound)
    python self_judge.py --judge reward --out-dir out/onpolicy_rm # judged by out/reward_model
    python self_judge.py --loss ipo --beta 0.5     # other losses; --resume continues a run exactly
"""

import copy
import dataclasses
import json
import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model import eval_mode, generate, sequence_logprobs, unwrap
from pretrain import TrainConfig, find_checkpoint, load_model, setup_distributed, train
from readers import fitting_prompts, opt, parse_config, read_preference_files, run_main
from reward_model import load_reward_model, reward_judge
from sft import build_pair_batch, offline_batches, positions, prompt_stream, seed_of, tokenize_pairs
from tasks import verifier_judge
from tokenizer import Tokenizer

LOSS_TYPES = ("sigmoid", "hinge", "ipo")
JUDGES = ("self", "reward", "verifier")


# ----------------------------------------------------------------------------- options
@dataclass
class SelfJudgeConfig(TrainConfig):
    out_dir: str = opt("", "checkpoint folder; '' = out/self_judge, or out/dpo with --offline")
    init_from: str = opt(
        "", "start, also the frozen reference and judge; '' = out/jsft (--offline: out/sft)"
    )
    offline: bool = opt(False, "the offline DPO baseline on --prefs, not on-policy self-judgment")
    tasks_dir: str = opt("out/tasks", "tasks.py's folder: default prompts, pairs, val prompts")
    prompts: str = opt(
        "",
        "prompts to sample (readers.read_prompts layouts); '' = <tasks-dir>/prompts_train.jsonl",
    )
    prefs: str = opt(
        "",
        "--offline: pair files, comma-separated (readers.read_preferences layouts); "
        "'' = <tasks-dir>/prefs_train.jsonl",
    )
    val_prompts: str = opt(
        "",
        "held-out prompts for the judged win rate vs the start (readers.read_prompts layouts); "
        "'' = <tasks-dir>/eval_tasks.jsonl",
    )
    val_count: int = opt(24, "how many --val-prompts to judge at the end (0 = no validation)")
    dynamic_judge: bool = opt(False, "judge with the current policy, not the frozen start model")
    principles: str = opt("overall", "comma-separated judge principles (majority vote, jsft.judge)")
    judge: str = opt(
        "self",
        "who judges: self (SELF-JUDGE: the frozen start, or the policy with --dynamic-judge) | "
        "reward (--reward-model) | verifier (tasks.score: the oracle arm)",
        JUDGES,
    )
    reward_model: str = opt("out/reward_model", "--judge reward: the reward model checkpoint")
    nll_weight: float = opt(0.0, "weight of the chosen replies' NLL per token (0 = plain DPO)")
    min_margin: float = opt(0.0, "verdicts within this of 0.5 (to the winner's side) are ties")
    loss: str = opt("sigmoid", "sigmoid (DPO), hinge (SLiC), ipo (IPO, summed logps)", LOSS_TYPES)
    beta: float = opt(0.1, "DPO beta: strength of the KL anchor to the reference")
    max_new_tokens: int = opt(48, "cap on sampled response length (tokens, incl. the end of turn)")
    temperature: float = opt(1.0, "sampling temperature")
    top_p: float = opt(0.9, "nucleus sampling mass")
    compile_sampler: bool = opt(
        False, "sample with a torch.compile'd decode step: same samples (not the loop's --compile)"
    )
    # the shared loop's knobs, with DPO defaults sized for the CPU demo (~2 minutes on 2 cores)
    steps: int = opt(60, "optimizer steps (DPO learns from as many pairs as SELF-JUDGE samples)")
    batch_size: int = opt(
        16, "prompts (online) or pairs (offline) per micro-batch per rank; each gives 2 sequences"
    )
    lr: float = opt(1e-4, "peak learning rate")  # 2e-5 x 40 steps moved the policy 0.3 %: a no-op
    min_lr: float = opt(1e-4, "learning rate at the end (== lr: constant after warmup, as in DPO)")
    warmup_steps: int = opt(4, "linear warmup steps")
    weight_decay: float = opt(0.0, "AdamW weight decay on matrices")
    eval_every: int = opt(0, "validate every N steps (and at the end); 0 = only at the end")
    save_every: int = opt(20, "checkpoint every N steps (and at the end)")
    seq_len: int = opt(128, "prompt + response length, only for the loop's FLOPs/MFU estimate")


def resolve(cfg: SelfJudgeConfig) -> SelfJudgeConfig:
    """Fill the mode-dependent defaults and check the values."""
    if cfg.fsdp and not cfg.offline:
        raise SystemExit(
            "--fsdp: sampling runs a different number of forward passes on each rank, which "
            "sharded weights cannot follow; run SELF-JUDGE data parallel (torchrun without --fsdp)"
        )
    if cfg.beta <= 0 or cfg.max_new_tokens < 1 or not 0 < cfg.top_p <= 1:
        raise SystemExit("need --beta > 0, --max-new-tokens >= 1 and 0 < --top-p <= 1")
    in_tasks = lambda name: os.path.join(cfg.tasks_dir, name)
    return dataclasses.replace(
        cfg,
        init_from=cfg.init_from or ("out/sft" if cfg.offline else "out/jsft"),
        out_dir=cfg.out_dir or ("out/dpo" if cfg.offline else "out/self_judge"),
        prompts=cfg.prompts or in_tasks("prompts_train.jsonl"),
        prefs=cfg.prefs or in_tasks("prefs_train.jsonl"),
        val_prompts=cfg.val_prompts or in_tasks("eval_tasks.jsonl"),
    )


# ----------------------------------------------------------------------------- the DPO loss
def dpo_loss(
    pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta=0.1, loss_type="sigmoid", weights=None
):
    """Preference loss on summed response log-probs, each (B,). With the log-ratio margin
    h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected):
      sigmoid  -log sigmoid(beta h)          DPO (Rafailov et al. 2023, eq. 7)
      hinge    max(0, 1 - beta h)            SLiC-HF (Zhao et al. 2023), as TRL's "hinge"
      ipo      (h - 1 / (2 beta))^2          IPO (Azar et al. 2023, eq. 17) on SUMMED log-probs,
                                             as the DPO authors' reference code (TRL averages
                                             them over the response: beta means another thing).
    weights (B,), optional: 1 for a pair to learn from, 0 for one to leave out (a tie); the loss is
    the weighted mean (0 when every pair is left out) and the metrics cover the kept pairs.
    Returns (mean loss, metrics): implicit rewards beta * (pi - ref) of chosen and rejected, their
    margin, and reward accuracy (share of pairs with chosen reward > rejected reward)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"dpo_loss: loss_type {loss_type!r} is not one of {LOSS_TYPES}")
    h = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)  # (B,)
    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    w = torch.ones_like(losses) if weights is None else weights.to(losses)
    kept = w.sum().clamp(min=1.0)
    reward_chosen = beta * (pi_chosen - ref_chosen).detach()
    reward_rejected = beta * (pi_rejected - ref_rejected).detach()
    wmean = lambda t: ((t.float() * w).sum() / kept).item()
    metrics = {
        "reward_chosen": wmean(reward_chosen),
        "reward_rejected": wmean(reward_rejected),
        "margin": wmean(reward_chosen - reward_rejected),
        "reward_acc": wmean(reward_chosen > reward_rejected),
        "kept_share": w.mean().item(),
    }
    return (losses * w).sum() / kept, metrics


# ----------------------------------------------------------------------------- sampling and pairs
def sample_responses(
    model, tokenizer, contexts, n, max_new_tokens, temperature=1.0, top_p=0.9, seed=0, compile=False
):
    """n responses to each context (a list of messages ending with a user turn), sampled in one
    batch with the KV-cache sampler (compile: its compiled decode step). Returns per context n id
    lists, each ending with eot when one was sampled (else it hit max_new_tokens). The same seed
    gives the same samples."""
    prompts = [tokenizer.render_chat(c, add_generation_prompt=True)[0] for c in contexts]
    return sample_continuations(
        model, tokenizer, prompts, n, max_new_tokens, temperature, top_p, seed, compile
    )


def sample_continuations(
    model, tokenizer, prompts, n, max_new_tokens, temperature=1.0, top_p=0.9, seed=0, compile=False
):
    """sample_responses on prompts already rendered to ids: per prompt, n sampled id lists."""
    rows = [p for p in prompts for _ in range(n)]  # prompt i's samples are rows i*n .. i*n+n-1
    device = next(unwrap(model).parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    new = generate(
        model,
        rows,
        max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        stop_ids=(tokenizer.eot_id,),
        generator=generator,
        pad_id=tokenizer.pad_id,
        compile=compile,
    )
    return [new[i * n : (i + 1) * n] for i in range(len(prompts))]


def model_judge(judge_model, tokenizer, principles=("overall",), batch_size=32):
    """judge_fn(contexts, pairs) -> jsft.judge's dict ({"score_a", "winners", ...}) with
    judge_model, in eval mode without gradients. Responses may be id lists: spliced in as ids."""
    principles = tuple(principles)

    def judge_fn(contexts, pairs):
        try:
            from jsft import judge  # lazy: the judge lives with JSFT training
        except ImportError as e:
            raise SystemExit(
                f"jsft.judge is not available ({e}); jsft.py must provide judge(model, tokenizer, "
                "contexts, pairs, principles, lang, batch_size)"
            ) from None
        with eval_mode(judge_model):
            return judge(judge_model, tokenizer, contexts, pairs, principles, batch_size=batch_size)

    return judge_fn


def online_batches(policy, judge_fn, tokenizer, contexts, cfg, rank=0, world_size=1):
    """get_batch(step, micro) for SELF-JUDGE: sample 2 responses per prompt from the current policy,
    judge them, return the chosen/rejected batch plus its statistics. Deterministic in (step, micro)
    given the weights: the sampler is seeded by (seed, step, micro, rank), so --resume is exact."""
    prompt_ids = [tokenizer.render_chat(c, add_generation_prompt=True)[0] for c in contexts]
    item = prompt_stream(len(contexts), cfg.seed)
    device = next(policy.parameters()).device
    knobs = dict(temperature=cfg.temperature, top_p=cfg.top_p, compile=cfg.compile_sampler)

    # sampling and judging in full precision, outside the loop's autocast
    def get_batch(step, micro):
        t0 = time.perf_counter()
        picked = [item(k) for k in positions(cfg, step, micro, rank, world_size)]
        prompts = [prompt_ids[i] for i in picked]
        seed = seed_of(cfg.seed, step, micro, rank)
        samples = sample_continuations(
            policy, tokenizer, prompts, 2, cfg.max_new_tokens, seed=seed, **knobs
        )
        t1 = time.perf_counter()
        verdict = judge_fn([contexts[i] for i in picked], [tuple(s) for s in samples])
        scores, winners = verdict["score_a"], verdict["winners"]
        chosen = [s[w] for s, w in zip(samples, winners)]
        rejected = [s[1 - w] for s, w in zip(samples, winners)]
        batch = build_pair_batch(prompts, chosen, rejected, tokenizer.pad_id)
        # ties teach nothing: identical samples, a verdict within --min-margin of 0.5, or a majority
        # of several principles that their mean score contradicts
        keep = [
            float(a != b and (0.5 - p if w else p - 0.5) > cfg.min_margin)
            for (a, b), p, w in zip(samples, scores, winners)
        ]
        batch["weights"] = torch.tensor(keep)
        responses = chosen + rejected
        batch["stats"] = {
            "judge_confidence": sum(max(p, 1 - p) for p in scores) / len(picked),
            "len_chosen": sum(map(len, chosen)) / len(chosen),
            "len_rejected": sum(map(len, rejected)) / len(rejected),
            "capped_share": sum(r[-1] != tokenizer.eot_id for r in responses) / len(responses),
            "identical_share": sum(a == b for a, b in samples) / len(samples),
            "sample_s": t1 - t0,  # seconds sampling, judging
            "judge_s": time.perf_counter() - t1,
        }
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    return get_batch


def dpo_loss_fn(reference, beta, loss_type, nll_weight=0.0):
    """loss_fn(model, batch) for the shared loop: policy log-probs with gradients, reference without
    (in the loop's autocast: at step 0 they agree exactly). nll_weight adds the chosen replies' NLL,
    each divided by its length, then averaged over the kept pairs (DPO + NLL, RPO, Pang et al. 2024,
    eq. 1; TRL's rpo_alpha averages over all chosen tokens at once, so long replies weigh more
    there): DPO alone lowers the chosen replies' likelihood too. Offline they are right answers;
    on-policy, its own samples (here mostly wrong), which it then learns."""

    def loss_fn(model, batch):
        logps, token_means = sequence_logprobs(model, batch["ids"], batch["mask"])  # (2B,), (2B,)
        with torch.no_grad():
            ref, _ = sequence_logprobs(reference, batch["ids"], batch["mask"])
        B = logps.size(0) // 2
        weights = batch.get("weights")
        loss, metrics = dpo_loss(logps[:B], logps[B:], ref[:B], ref[B:], beta, loss_type, weights)
        if nll_weight:
            w = torch.ones(B, device=logps.device) if weights is None else weights.to(logps)
            nll = -(token_means[:B] * w).sum() / w.sum().clamp(min=1.0)
            loss, metrics["nll_chosen"] = loss + nll_weight * nll, nll.item()
        return loss, {**metrics, **batch.get("stats", {})}

    return loss_fn


def frozen_copy(model):
    model_copy = copy.deepcopy(unwrap(model))
    model_copy.free_cache()
    return model_copy.eval().requires_grad_(False)


def disable_dropout(model):
    """Off everywhere: DPO compares log-probs of policy and reference, which dropout makes noisy."""
    model.cfg.dropout = 0.0
    for module in model.modules():
        if hasattr(module, "dropout_p"):
            module.dropout_p = 0.0
        if hasattr(module, "dropout") and isinstance(module.dropout, float):
            module.dropout = 0.0
    return model


def judged_win_rate(
    policy, base, judge_fn, tokenizer, contexts, max_new_tokens, temperature=1.0, top_p=0.9, seed=0
):
    """How often the judge prefers the policy's sample to the baseline's (one fresh sample each per
    context, independent fixed seeds). Returns {"win_rate": mean p(policy better), "wins": share of
    pairs with p > 0.5, ties (p == 0.5) counted half}."""
    knobs = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    with eval_mode(policy), eval_mode(base):
        mine = sample_responses(
            policy, tokenizer, contexts, 1, seed=seed_of(seed, "policy"), **knobs
        )
        theirs = sample_responses(base, tokenizer, contexts, 1, seed=seed_of(seed, "base"), **knobs)
    p = judge_fn(contexts, [(a[0], b[0]) for a, b in zip(mine, theirs)])["score_a"]
    wins = sum((x > 0.5) + 0.5 * (x == 0.5) for x in p) / len(p)
    return {"win_rate": sum(p) / len(p), "wins": wins}


# ----------------------------------------------------------------------------- self-rejection
def knockout(contexts, candidates, judge_pairs, brackets):
    """Knockout rounds for many contexts at once (SELF-JUDGE §3.3). brackets[i]: context i's
    candidate indices in bracket order. Each round pairs neighbours, an odd one out gets a bye (and
    goes first in the next round, so byes rotate); N_i - 1 judgments in all. judge_pairs(contexts,
    pairs) -> winners (0 = first, 1 = second), called once per round with every context's matches.
    Returns the brackets before each round and after the last: rounds[r][i] is what is left of
    context i's field after r rounds, and rounds[-1][i] is [its winner]."""
    rounds = [brackets]
    while any(len(b) > 1 for b in brackets):
        matches = [
            (i, b[k], b[k + 1]) for i, b in enumerate(brackets) for k in range(0, len(b) - 1, 2)
        ]
        pairs = [(candidates[i][a], candidates[i][b]) for i, a, b in matches]
        winners = list(judge_pairs([contexts[i] for i, _, _ in matches], pairs))
        if len(winners) != len(matches) or any(w not in (0, 1) for w in winners):
            raise ValueError(
                "tournament: judge_pairs must return one 0/1 per pair "
                f"({len(matches)}), got {winners!r:.100}"
            )
        next_round = [[b[-1]] if len(b) % 2 else [] for b in brackets]  # byes first
        for (i, a, b), w in zip(matches, winners):
            next_round[i].append((a, b)[w])
        brackets = next_round
        rounds.append(brackets)
    return rounds


# ----------------------------------------------------------------------------- CLI
def main(argv=None):
    cfg = resolve(parse_config(SelfJudgeConfig, argv, description=__doc__.split("\n\n")[0]))
    device, rank, world_size = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"config: {json.dumps(dataclasses.asdict(cfg))}")
    ckpt = find_checkpoint(cfg.init_from) or cfg.init_from  # a run folder: its newest complete save
    policy, init_config = load_model(ckpt, device)
    disable_dropout(policy)
    reference = frozen_copy(policy)
    tokenizer_path = os.path.join(ckpt, "tokenizer.model")
    tokenizer = Tokenizer(tokenizer_path)
    max_len = policy.cfg.max_seq_len
    extra = {
        "phase": "dpo" if cfg.offline else "self_judge",
        "judged_by": None if cfg.offline else cfg.judge,
        "init_from": cfg.init_from,
        "init_phase": init_config.get("phase"),
        "special_ids": tokenizer.special_ids(),
    }
    held = [policy, reference]  # the models this run keeps in memory: policy, reference, judge
    val_fn = None
    if cfg.offline:
        pairs = read_preference_files(cfg.prefs)
        tokenized, dropped = tokenize_pairs(tokenizer, pairs, max_len)
        too_long = f", {dropped} longer than {max_len} tokens left out" if dropped else ""
        log(f"{cfg.prefs}: {len(tokenized)} pairs{too_long}")
        if not tokenized:
            raise SystemExit(f"{cfg.prefs}: no usable preference pair")
        get_batch = offline_batches(tokenized, cfg, tokenizer.pad_id, device, rank, world_size)
    else:
        principles = cfg.principles.split(",")
        if cfg.judge == "verifier":
            judge_fn, who = verifier_judge(cfg.prompts, tokenizer), "the verifier (oracle arm)"
        elif cfg.judge == "reward":
            rm = load_reward_model(cfg.reward_model, tokenizer_path, device)
            judge_fn, who = reward_judge(rm, tokenizer), f"the reward model {cfg.reward_model}"
            held.append(rm)
            extra["reward_model"] = cfg.reward_model
        else:
            judge_model = policy if cfg.dynamic_judge else reference
            judge_fn = model_judge(judge_model, tokenizer, principles)
            who = "dynamic (the policy)" if cfg.dynamic_judge else "static (frozen start)"
        contexts = fitting_prompts(cfg.prompts, tokenizer, cfg.max_new_tokens, max_len, "prompts")
        log(f"{cfg.prompts}: {len(contexts)} prompts; judge: {who}")
        get_batch = online_batches(policy, judge_fn, tokenizer, contexts, cfg, rank, world_size)
        if cfg.val_count > 0:
            val_contexts = fitting_prompts(
                cfg.val_prompts, tokenizer, cfg.max_new_tokens, max_len, "val-prompts"
            )[: cfg.val_count]
            val_judge = model_judge(reference, tokenizer, principles)  # frozen: a fixed yardstick
            knobs = dict(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed)

            def val_fn(model):  # the judged win rate of the policy's samples against the start's
                args = (model, reference, val_judge, tokenizer, val_contexts, cfg.max_new_tokens)
                return {f"val_{k}": v for k, v in judged_win_rate(*args, **knobs).items()}

    extra["params_held"] = sum(m.num_params() for m in held)  # the cost column of evaluate.py
    train(
        policy,
        get_batch,
        cfg,
        extra,
        loss_fn=dpo_loss_fn(reference, cfg.beta, cfg.loss, cfg.nll_weight),
        val_fn=val_fn,
        tokenizer_path=tokenizer_path,
        device=device,
        rank=rank,
        world_size=world_size,
        log=log,
    )
    if world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
