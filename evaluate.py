"""evaluate.py: one report for the whole pipeline, over any set of checkpoints.

HyperCLOVA X §4 (benchmarks; multiple choice read off the answer letter's probability; win rates
judged in both orders, §4.3) and SELF-JUDGE (Lee et al., ACL 2024: judge accuracy, position
consistency, self-rejection by tournament). Each section is a function usable on its own, and
skippable with --skip (lm, fim and mc are benchmarks.py's; report.py renders the report):

  lm         validation loss and bits per byte per language group (ko / en / code)
  tokenizer  mean tokens per held-out document (HCX Table 1), from tokenizer.py's report.json
  fim        fill-in-the-middle on held-out documents: exact match and prefix match of the middle
  mc         multiple choice from .jsonl (DESIGN.md §4; MMLU and KMMLU layouts), HCX style
  tasks      the verifier's scores of greedy and of sampled replies (--samples per prompt, T=1)
             to every held-out prompt, per principle, family, language; how far each stage moved
             from its start (KL estimate on its own samples, share of changed replies)
  win        win rates on sampled replies against the baseline and against each checkpoint's
             own start, with paired bootstrap 95 % intervals; on greedy replies by the verifier
             and by a judge
  judge      judge accuracy and position consistency on held-out preference pairs, and on on-policy
             pairs (two samples of the SELF-JUDGE start, judged by itself, against the verifier;
             beside it the reward model and the policy's own likelihood on the same pairs)
  rejection  self-rejection curve: knockout winners among N samples, N = 1, 2, 4, 8, 16 (every
             group of N of the samples counted), its gain over N = 1 with a paired interval

Run:
  python evaluate.py                             # the demo's checkpoints that exist -> out/eval/
  python evaluate.py --ckpts sft=out/sft,dpo=out/dpo --baseline sft --judge-ckpt out/jsft
  python evaluate.py --ckpts base=out/pretrain --mc my_kmmlu.jsonl --skip tasks,win,judge,rejection
Writes out/eval/report.md (tables; plots when matplotlib is installed; rendered by report.py),
out/eval/report.json (every figure) and prints a short table.
The --max-* knobs subsample, to keep the demo inside its time budget.
"""

import collections
import contextlib
import filecmp
import dataclasses
import json
import os
import platform
import random
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import fim_section, lm_section, mc_eval, mean
from model import eval_mode, generate, sequence_logprobs, unwrap
from pretrain import find_checkpoint, load_model
from readers import opt, parse_config, read_jsonl, read_mc, read_preferences
from report import summary_table, write_report
from sft import response_batch
from tokenizer import Tokenizer

SECTIONS = ("lm", "tokenizer", "fim", "mc", "tasks", "win", "judge", "rejection")
JUDGE_PHASES = ("jsft", "self_judge")  # the phases that train a checkpoint to judge


@dataclass
class EvalConfig:
    ckpts: str = opt(
        "pretrain=out/pretrain,sft=out/sft,dpo=out/dpo,jsft=out/jsft,self_judge=out/self_judge",
        "NAME=DIR,... to compare; with this default, missing ones are skipped with a note",
    )
    baseline: str = opt("sft", "the checkpoint NAME that win rates are measured against")
    judge_ckpt: str = opt(
        "jsft", "judge of the win rates beside the verifier: a NAME of --ckpts or a DIR; '' = none"
    )
    judges: str = opt(
        "", "NAMES whose judge accuracy is measured; '' = those trained to judge (jsft, self_judge)"
    )
    data_dir: str = opt("out/data", "data.py's folder: val_{ko,en,code}.bin and meta.json")
    tokenizer: str = opt(
        "out/tokenizer/tokenizer.model", "data.py's tokenizer, when meta.json's path is gone"
    )
    tokenizer_report: str = opt("out/tokenizer/report.json", "tokenizer.py's efficiency report")
    tasks_dir: str = opt("out/tasks", "tasks.py's exports: eval_tasks.jsonl, prefs_eval.jsonl")
    out_dir: str = opt("out/eval", "where report.md and report.json go")
    mc: str = opt(
        "evals/mc_ko.jsonl,evals/mc_en.jsonl",
        "multiple-choice .jsonl FILES, comma-separated "
        "(relative paths are also looked up beside this script)",
    )
    fim_ckpts: str = opt(
        "pretrain", "NAMES evaluated on fill-in-the-middle (base models); '' = all"
    )
    fim_groups: str = opt("code", "language groups whose held-out documents FIM uses")
    rejection_ckpt: str = opt(
        "self_judge", "NAME of --ckpts whose samples the self-rejection curve picks from"
    )
    rejection_judge: str = opt(
        "", "judge of its knockouts: a NAME or DIR; '' = the same checkpoint (self-rejection)"
    )
    rejection_max_n: int = opt(
        8, "the self-rejection curve runs N = 1, 2, 4, ... up to this power of two"
    )
    rejection_prompts: int = opt(128, "held-out prompts on the self-rejection curve; 0 = all")
    max_val_tokens: int = opt(2048, "validation tokens per language group; 0 = all")
    max_tasks: int = opt(
        0,
        "held-out prompts for verifier scores and win rates "
        "(stratified by family, language); 0 = all",
    )
    samples: int = opt(
        2, "replies sampled per prompt (T=1, top-p 0.9) for the sampled scores and win rates"
    )
    reward_model: str = opt(
        "out/reward_model",
        "a reward model (reward_model.py) measured beside the judges, "
        "on held-out and on-policy pairs, and as best-of-N on the "
        "self-rejection curve; "
        "'' = none (a missing default is skipped with a note)",
    )
    onpolicy_ckpt: str = opt(
        "jsft",
        "NAME whose two samples per held-out prompt its own judge "
        "labels (what SELF-JUDGE judges), scored against the "
        "verifier; '' = none",
    )
    max_judge_pairs: int = opt(0, "held-out preference pairs for judge accuracy; 0 = all")
    fim_examples: int = opt(24, "FIM examples (windows of held-out documents)")
    fim_chars: int = opt(240, "characters per FIM window (whole lines, cut at thirds)")
    fim_max_new_tokens: int = opt(48, "cap on a generated middle")
    max_new_tokens: int = opt(
        32, "cap on a reply (the longest gold reply is 29 tokens with the demo tokenizer)"
    )
    batch_size: int = opt(48, "sequences per forward pass or generation batch")
    seq_len: int = opt(256, "window of the validation loss (at most the model's max_seq_len)")
    skip: str = opt("", "SECTIONS to leave out, comma-separated: " + ",".join(SECTIONS))
    skip_bad: bool = opt(
        False, "skip malformed multiple-choice records (counted) instead of stopping"
    )
    seed: int = opt(0, "seed of the samples and subsamples")
    device: str = opt("auto", "auto | cpu | cuda | mps")
    threads: int = opt(
        0, "torch CPU threads; 0 = torch's default (on a busy machine 1 can be much faster)"
    )


# ------------------------------------------------------------------ small helpers
def names(spec):
    return [s.strip() for s in spec.split(",") if s.strip()]


def strip_stop(ids, stops):
    return ids[:-1] if ids and ids[-1] in stops else ids


def load(ckpt_dir, device, fallback_tokenizer=None):
    """(model in eval mode, its tokenizer, its config dict): the checkpoint's own tokenizer.model
    when it has one."""
    ckpt_dir = find_checkpoint(ckpt_dir) or ckpt_dir  # a run folder: its newest complete save
    model, config = load_model(ckpt_dir, device, policy=False)  # run() names a reward model
    path = os.path.join(ckpt_dir, "tokenizer.model")
    return model.eval(), Tokenizer(path if os.path.exists(path) else fallback_tokenizer), config


def loss_curve(ckpt_dir, max_points=200):
    """metrics.jsonl -> {"step", "loss", "val_step", "val_loss"}, thinned to about max_points, and
    the median wall time of a step; None without one."""
    path = os.path.join(ckpt_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = read_jsonl(path, lambda row: row, skip_bad=True)  # a row torn by a kill: left out
    every = max(1, len(rows) // max_points)
    curve = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    step_s = sorted(r["step_s"] for r in rows if "step_s" in r)
    # wall time per optimizer step
    curve["median_step_s"] = step_s[len(step_s) // 2] if step_s else None
    for k, r in enumerate(rows):
        if "loss" in r and (k % every == 0 or k == len(rows) - 1):
            curve["step"].append(r["step"])
            curve["loss"].append(r["loss"])
        if "val_loss" in r:
            curve["val_step"].append(r["step"])
            curve["val_loss"].append(r["val_loss"])
    return curve


# ------------------------------------------------------------------ tasks: replies and the verifier
def pick_tasks(tasks, k):
    """Up to k tasks (0 = all), round-robin over (family, language), so every cell is
    represented."""
    cells = {}
    for t in tasks:
        cells.setdefault((t["family"], t["lang"]), []).append(t)
    queues, out = [cells[key] for key in sorted(cells)], []
    for i in range(max(map(len, queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out[:k] if k else out


@torch.no_grad()
def greedy_replies(model, tok, contexts, max_new_tokens=32, batch_size=32):
    """Greedy replies (ids, without the closing <|endofturn|>) to conversations that end with a user
    turn."""
    prompts = [tok.render_chat(c, add_generation_prompt=True)[0] for c in contexts]
    stops, out = (tok.eot_id, tok.eos_id), []
    for k in range(0, len(prompts), batch_size):
        chunk = prompts[k : k + batch_size]
        room = model.cfg.max_seq_len - max(map(len, chunk))
        if room < 1:
            raise ValueError(f"a prompt of {max(map(len, chunk))} tokens fills the model's context")
        new = generate(
            model,
            chunk,
            min(max_new_tokens, room),
            temperature=0,
            stop_ids=stops,
            pad_id=tok.pad_id,
        )
        out += [strip_stop(ids, stops) for ids in new]
    return out


@torch.no_grad()
def sampled_replies(model, tok, contexts, k=2, max_new_tokens=32, seed=0, batch_size=48):
    """k replies per conversation sampled as the policy is used (T=1, top-p 0.9), as id lists as
    drawn: ending with <|endofturn|> where one was sampled, not where max_new_tokens cut a reply
    (what SELF-JUDGE's loop hands its judge, and what a reply's log-probability must score). Chunk
    j is seeded by (seed, j) for every model alike: common random numbers, so two models that
    agree give the same replies and paired comparisons carry less noise."""
    from self_judge import sample_responses
    from sft import seed_of

    out, step = [], max(1, batch_size // k)
    for j in range(0, len(contexts), step):
        out += sample_responses(
            model, tok, contexts[j : j + step], k, max_new_tokens, 1.0, 0.9, seed_of(seed, j)
        )
    return out


@torch.no_grad()
def reply_logprobs(model, tok, contexts, replies, batch_size=48):
    """Summed log p_model(reply | context), one per reply, flattened in order: replies holds one
    list of replies per context, each text (scored as encode(text) + <|endofturn|>) or an id list
    scored as drawn (its <|endofturn|> where one was sampled; none where the length cap cut it)."""
    from reward_model import reply_turn_ids

    rows = [
        (tok.render_chat(c, add_generation_prompt=True)[0], reply_turn_ids(tok, r))
        for c, per in zip(contexts, replies)
        for r in per
    ]
    # similar lengths batched together: in the task order, half the padded tokens were padding
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
    device, out = next(unwrap(model).parameters()).device, [0.0] * len(rows)
    for j in range(0, len(order), batch_size):
        idx = order[j : j + batch_size]
        batch = response_batch([rows[i][0] for i in idx], [rows[i][1] for i in idx], tok.pad_id)
        ids, mask = batch["ids"].to(device), batch["mask"].to(device)
        for i, lp in zip(idx, sequence_logprobs(model, ids, mask)[0].tolist()):
            out[i] = lp
    return out


def log_ratio_to_start(model, start, tok, contexts, replies, batch_size=48):
    """Mean over the model's own replies of log p_model(y|x) - log p_start(y|x) (nats per reply): a
    Monte-Carlo estimate of KL(model || start), how far a stage moved its policy."""
    own = reply_logprobs(model, tok, contexts, replies, batch_size)
    ref = reply_logprobs(start, tok, contexts, replies, batch_size)
    return sum(a - b for a, b in zip(own, ref)) / len(own)


def likelihood_judge(model, tok, batch_size=48):
    """judge_fn that picks the reply the model itself finds likelier (summed log-probability, as
    reply_logprobs scores it; no judging prompt): what the policy's own distribution knows about
    a pair, a yardstick for its A/B judge on the same pairs (evaluate's on-policy section).
    Order-free."""

    def judge_fn(contexts, pairs):
        with eval_mode(model):
            lp = reply_logprobs(model, tok, contexts, [list(p) for p in pairs], batch_size)
        a_better = [a > b for a, b in zip(lp[0::2], lp[1::2])]
        return {
            "winners": [int(not a) for a in a_better],
            "first_order_a": a_better,
            "second_order_a": a_better,
        }

    return judge_fn


def summarize_scores(tasks, scores):
    """Verifier scores -> mean of each principle and overall, correctness share; per family and per
    language."""

    def block(idx):
        s = [scores[i] for i in idx]
        return {
            **{p: mean(x[p] for x in s) for p in s[0]},
            "correct_share": mean(x["correctness"] == 1 for x in s),
            "n": len(s),
        }

    out = block(range(len(tasks)))
    for key in ("family", "lang"):
        cells = {}
        for i, t in enumerate(tasks):
            cells.setdefault(t[key], []).append(i)
        out[f"per_{key}"] = {c: block(idx) for c, idx in sorted(cells.items())}
    return out


def tasks_section(tasks, replies):
    import tasks as task_world  # the verifier

    scores = [task_world.score(t, r) for t, r in zip(tasks, replies)]
    return {
        **summarize_scores(tasks, scores),
        "scores": [s["overall"] for s in scores],
        "examples": [
            {"prompt": t["messages"][-1]["content"], "reply": r, "gold": t["answer"]}
            for t, r in list(zip(tasks, replies))[:3]
        ],
    }


# ------------------------------------------------------------------ win rates (HCX §4.3)
def hcx_outcomes(first_order, second_order):
    """Each prompt is judged twice, the candidate's reply shown first, then second. A verdict is 1
    (the candidate wins), 0.5 (tie) or 0; the prompt scores their mean: 1 = won both orders, 0.5 =
    split or tied, 0 = lost both."""
    return [(float(a) + float(b)) / 2 for a, b in zip(first_order, second_order)]


def win_summary(first_order, second_order):
    outcomes = hcx_outcomes(first_order, second_order)
    return {
        "win_rate": mean(outcomes),
        "wins": outcomes.count(1.0),
        "ties": outcomes.count(0.5),
        "losses": outcomes.count(0.0),
        "n_prompts": len(outcomes),
        "n_judgments": 2 * len(outcomes),
        "first_order_win_rate": mean(map(float, first_order)),
        "second_order_win_rate": mean(map(float, second_order)),
    }


def sampled_outcomes(cand_scores, base_scores):
    """Per prompt, the mean over j of sample j's verdict against the baseline's sample j (1 / 0.5
    / 0): with two samples 0, 0.25, 0.5, 0.75 or 1."""
    pairs = zip(cand_scores, base_scores, strict=True)  # the same prompts on both sides
    return [mean(verifier_verdicts(cs, bs)[0]) for cs, bs in pairs]


def paired_win(outcomes, seed=0):
    """Win rate of per-prompt outcomes with its paired bootstrap interval; significant when the
    interval excludes 0.5. wins / ties / losses count the prompts whose outcome is above / at /
    below 0.5 (a split, one verdict won and one lost, is at 0.5). The outcomes are kept so that
    seeds can be pooled (reproduce.py)."""
    ci = bootstrap_interval(outcomes, seed)
    return {
        "win_rate": mean(outcomes),
        "ci": ci,
        "n_prompts": len(outcomes),
        "wins": sum(o > 0.5 for o in outcomes),
        "ties": sum(o == 0.5 for o in outcomes),
        "losses": sum(o < 0.5 for o in outcomes),
        "significant": ci is not None and (ci[0] > 0.5 or ci[1] < 0.5),
        "outcomes": outcomes,
    }


def verifier_verdicts(cand_scores, base_scores):
    """The verifier reads no order: the same verdict in both (1, 0.5 for equal overall scores,
    0)."""
    v = [
        1.0 if a["overall"] > b["overall"] else 0.5 if a["overall"] == b["overall"] else 0.0
        for a, b in zip(cand_scores, base_scores, strict=True)  # as many replies on both sides
    ]
    return v, v


def judge_verdicts(judge, contexts, cand, base):
    """Each order's verdict for the candidate; identical replies tie without asking the judge."""
    first, second = [0.5] * len(cand), [0.5] * len(cand)
    ask = [i for i in range(len(cand)) if cand[i] != base[i]]
    if ask:
        result = judge([contexts[i] for i in ask], [(cand[i], base[i]) for i in ask])
        for j, i in enumerate(ask):
            first[i], second[i] = (
                float(result["first_order_a"][j]),
                float(result["second_order_a"][j]),
            )
    return first, second


def bootstrap_interval(outcomes, seed=0, n_boot=4000, level=0.95):
    """Percentile interval of the mean of per-prompt outcomes, resampling prompts with replacement.
    Paired: each outcome already compares two arms on the same prompt (1 / 0.5 / 0, or a
    difference)."""
    x = np.asarray(outcomes, dtype=float)
    if len(x) == 0:
        return None
    means = x[np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def onpolicy_judge(
    policy,
    tok,
    judge_fn,
    tasks,
    max_new_tokens=48,
    seed=0,
    other_judges=None,
    samples=None,
    batch_size=48,
):
    """What SELF-JUDGE really judges: two samples per prompt from `policy` (T=1, top-p 0.9, as in
    training; samples: this very draw of sampled_replies when already made, e.g. by the task
    section), both scored by the verifier. Pairs the verifier ties (identical samples among them)
    are counted and dropped; on the rest, the judge's accuracy per order, order-averaged, its
    position consistency, the share of single-order verdicts naming the reply shown first
    (names_first: its position prior), and all of these by what separates the pair (by_difference:
    correctness, or surface principles only), and the correctness pairs by task family
    (correctness_by_family, beside the samples' correct share per family: which families the
    judge misreads, and whether the policy can solve them). other_judges {name: judge_fn}: the same
    figures for other judges of the same pairs ("others"; evaluate runs the reward model and the
    policy's own likelihood, likelihood_judge). Also the mean verifier scores of the samples, per
    principle (where the policy's flaws are)."""
    import tasks as task_world

    contexts = [t["messages"] for t in tasks]
    samples = samples or sampled_replies(policy, tok, contexts, 2, max_new_tokens, seed, batch_size)
    assert len(samples) == len(tasks) and all(len(pair) == 2 for pair in samples)
    scores = [[task_world.score(t, tok.decode(s)) for s in pair] for t, pair in zip(tasks, samples)]
    differ = [i for i, (a, b) in enumerate(scores) if a["overall"] != b["overall"]]
    out = {
        "n_pairs": len(tasks),
        "identical_share": mean(a == b for a, b in samples),
        "tie_share": 1 - len(differ) / len(tasks),
        "n_judged": len(differ),
        "sample_scores": {p: mean(x[p] for pair in scores for x in pair) for p in scores[0][0]},
    }
    a_better = [scores[i][0]["overall"] > scores[i][1]["overall"] for i in differ]
    # what separates a pair: its correctness, or only surface principles (language, concision,
    # ending)
    kinds = [
        "correctness" if scores[i][0]["correctness"] != scores[i][1]["correctness"] else "surface"
        for i in differ
    ]
    families = [tasks[i]["family"] for i in differ]
    # where the correctness pairs come from: the families the policy sometimes solves
    by_family = {}
    for t, pair in zip(tasks, scores):
        by_family.setdefault(t["family"], []).extend(x["correctness"] == 1 for x in pair)
    out["sampled_correct_by_family"] = {f: mean(x) for f, x in by_family.items()}

    def accuracy(fn):
        verdict = fn([contexts[i] for i in differ], [tuple(samples[i]) for i in differ])
        first, second = verdict["first_order_a"], verdict["second_order_a"]
        rows = list(zip(verdict["winners"], first, second, a_better, kinds, families))

        def block(rs):
            return {
                "n": len(rs),
                "acc": mean((w == 0) == y for w, _, _, y, *_ in rs),
                "acc_first_order": mean(f == y for _, f, _, y, *_ in rs),
                "acc_second_order": mean(s == y for _, _, s, y, *_ in rs),
                "consistency": mean(f == s for _, f, s, *_ in rs),
                # single-order verdicts naming the reply shown first: 0.5 for no position prior
                "names_first": mean((f + (not s)) / 2 for _, f, s, *_ in rs),
            }

        result = block(rows)
        result["by_difference"] = {
            k: block([r for r in rows if r[4] == k])
            for k in ("correctness", "surface")
            if k in kinds
        }
        on_correctness = [r for r in rows if r[4] == "correctness"]
        result["correctness_by_family"] = {  # most pairs first
            f: block([r for r in on_correctness if r[5] == f])
            for f, _ in collections.Counter(r[5] for r in on_correctness).most_common()
        }
        return result

    if differ:
        out.update(accuracy(judge_fn))
        out["others"] = {name: accuracy(fn) for name, fn in (other_judges or {}).items()}
    return out


# ------------------------------------------------------------------ self-rejection curve
def nested_knockout(contexts, candidates, judge_winners):
    """One knockout over each context's candidates (a power-of-two count, in sample order): after
    round r its survivors are the winners of the disjoint groups of 2^r consecutive samples, i.e.
    max_n / 2^r best-of-2^r picks. One bracket gives the whole curve in N-1 judgments per context,
    every sample counted at every N (separate tournaments for N = 2, 4, 8 would take 1 + 3 + 7
    judgments and use fewer samples). judge_winners(contexts, pairs) -> [0 = first, 1 = second],
    called once per round for every context.
    -> {N: [per context, the winner index of each group of N]} for N = 1, 2, 4, ..., max_n."""
    from self_judge import knockout

    rounds = knockout(
        contexts, candidates, judge_winners, [list(range(len(c))) for c in candidates]
    )  # in sample order
    return {2**r: brackets for r, brackets in enumerate(rounds)}


def rejection_curve(
    policy, tok, judge, tasks, max_n=16, max_new_tokens=32, seed=0, as_text=False, other_judges=None
):
    """SELF-JUDGE self-rejection: per prompt, sample max_n replies (T=1, top-p 0.9,
    self_judge.sample_responses); for N = 1, 2, 4, ..., max_n the knockout winners of the max_n / N
    groups of N samples (judged by `judge` in both orders) are scored by the verifier: every sample
    counts at every N, so N=1 is the mean over all samples (the expected score of one sample) and
    the curve's points are as precise as the samples allow. oracle_* is the verifier's own best of
    each group, the ceiling. Per N also the per-prompt mean ("per_prompt") and the gain over N=1
    with a paired bootstrap interval over prompts ("gain_vs_1").
    as_text: give the judge decoded text (it tokenizes differently). other_judges {name: judge_fn}:
    their picks among the same samples, handed as drawn ids (a reward model shares the policy's
    tokenizer: reward_judges checks), as <name>_overall and <name>_correct_share (a reward model's
    knockout is its best-of-N: a scalar judge's knockout winner is its highest reward)."""
    import tasks as task_world
    from self_judge import sample_responses

    if max_n < 1 or max_n & (max_n - 1):
        raise ValueError(f"--rejection-max-n {max_n}: must be a power of two (1, 2, 4, 8, 16, ...)")
    contexts = [t["messages"] for t in tasks]
    samples = sample_responses(  # as drawn: judges read them as SELF-JUDGE's loop hands them
        policy, tok, contexts, max_n, max_new_tokens, temperature=1.0, top_p=0.9, seed=seed
    )
    scores = [[task_world.score(t, tok.decode(s)) for s in per] for t, per in zip(tasks, samples)]
    cands = [[tok.decode(s) for s in per] for per in samples] if as_text else samples

    def picks(fn, cands):  # {N: per prompt, the verifier scores of its groups' winners}
        bracket = nested_knockout(contexts, cands, lambda cx, pr: fn(cx, pr)["winners"])
        return {
            n: [[per[w] for w in ws] for per, ws in zip(scores, groups)]
            for n, groups in bracket.items()
        }

    def flat(per_prompt):
        return [x for per in per_prompt for x in per]

    others = {name: picks(fn, samples) for name, fn in (other_judges or {}).items()}
    curve, by_n = [], picks(judge, cands)
    one = [mean(x["overall"] for x in per) for per in by_n[1]]  # per prompt: any one sample
    for n, picked in by_n.items():
        best = [
            [max(per[g : g + n], key=lambda x: x["overall"]) for g in range(0, len(per), n)]
            for per in scores
        ]
        per_prompt = [mean(x["overall"] for x in per) for per in picked]
        gain = [a - b for a, b in zip(per_prompt, one)]
        row = {
            "n": n,
            "overall": mean(per_prompt),
            "correct_share": mean(x["correctness"] == 1 for x in flat(picked)),
            "gain_vs_1": mean(gain),
            "gain_vs_1_ci": bootstrap_interval(gain, seed),
            "oracle_overall": mean(x["overall"] for x in flat(best)),
            "oracle_correct_share": mean(x["correctness"] == 1 for x in flat(best)),
        }
        for name, other in others.items():
            row[f"{name}_overall"] = mean(x["overall"] for x in flat(other[n]))
            row[f"{name}_correct_share"] = mean(x["correctness"] == 1 for x in flat(other[n]))
        curve.append(dict(row, per_prompt=per_prompt))
    return curve


# ------------------------------------------------------------------ the whole report
@contextlib.contextmanager
def clock(seconds, section):
    """Adds the block's wall time to seconds[section]."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[section] += time.perf_counter() - start


@contextlib.contextmanager
def torch_threads(n):
    """torch's CPU threads set to n inside the block (0: left as they are), restored after."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def checkpoints_to_run(cfg, notes):
    """--ckpts -> {name: dir}. From the default list a missing checkpoint is skipped (noted); a
    named one errors."""
    ckpts, user_given = {}, cfg.ckpts != EvalConfig.ckpts
    for item in names(cfg.ckpts):
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--ckpts {cfg.ckpts!r}: expected NAME=DIR,..., got {item!r}")
        if find_checkpoint(path):
            ckpts[name] = path
        elif user_given:
            raise FileNotFoundError(f"--ckpts {name}={path}: no checkpoint there (no model.pt)")
        else:
            notes.append(f"checkpoint {name} ({path}) not found: skipped")
    if not ckpts:
        raise FileNotFoundError(
            f"none of the checkpoints exist ({cfg.ckpts}); run the pipeline first (make demo)"
        )
    return ckpts


def optional_reward_model(cfg, device, notes):
    """(reward model, its tokenizer) from --reward-model, or None: none asked for, or the default
    one missing (noted)."""
    if not cfg.reward_model:
        return None
    ckpt = find_checkpoint(cfg.reward_model)
    if not ckpt and cfg.reward_model == EvalConfig.reward_model:
        notes.append(
            f"reward model {cfg.reward_model} not found: no reward-model rows (run reward_model.py)"
        )
        return None
    # refuses a missing or non-reward checkpoint
    from reward_model import load_reward_model

    return (
        load_reward_model(cfg.reward_model, None, device),
        Tokenizer(os.path.join(ckpt, "tokenizer.model")),
    )


def resolve(name_or_dir, ckpts):
    """A NAME of --ckpts or a checkpoint DIR -> its dir; None when there is no checkpoint."""
    path = ckpts.get(name_or_dir, name_or_dir)
    return path if name_or_dir and find_checkpoint(path) else None


def read_input(path, notes, missing):
    """A .json or .jsonl input, or None (noted: what is `missing` without it)."""
    if not os.path.exists(path):
        notes.append(f"{path} not found: {missing}")
        return None
    if not path.endswith(".json"):
        return read_jsonl(path, lambda record: record)  # errors name the file and line
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def run(cfg):
    """Every section for every checkpoint -> the report (what report.json holds). Reads top down:
    the inputs, then each checkpoint's own sections, then the sections that compare checkpoints."""
    t_start, notes = time.perf_counter(), []
    seconds = dict.fromkeys(SECTIONS, 0.0)
    skip = set(names(cfg.skip))
    if skip - set(SECTIONS):
        raise ValueError(
            f"--skip {cfg.skip!r}: unknown section(s) {sorted(skip - set(SECTIONS))}; "
            f"use {SECTIONS}"
        )
    on = {s: s not in skip for s in SECTIONS}
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        device = "mps" if device == "cpu" and torch.backends.mps.is_available() else device
    ckpts = checkpoints_to_run(cfg, notes)
    report = empty_report(cfg, device, notes)
    inputs = read_inputs(cfg, on, report)
    report["prompt_ids"] = [t.get("id") for t in inputs.picked]  # what reproduce.py pairs on
    rm = optional_reward_model(cfg, device, notes) if on["judge"] or on["rejection"] else None

    # each checkpoint in turn: its benchmarks, replies, movement from its start, judge accuracy
    replies = {}  # checkpoint name -> its greedy reply texts to inputs.picked
    sampled = {}  # checkpoint name -> (sampled reply ids, their verifier scores)
    loaded, by_path = {}, {os.path.realpath(p): n for n, p in ckpts.items()}
    judges = set(names(cfg.judges))  # none named: those trained to judge
    for name, path in tqdm(ckpts.items(), desc="checkpoints", unit="ckpt"):
        model, tok, config = load(path, device, cfg.tokenizer)
        if model.cfg.reward_head:
            raise ValueError(
                f"--ckpts {name}={path}: a reward model, which does not generate; "
                f"pass it as --reward-model"
            )
        phase = config.get("phase", "?")
        start = by_path.get(os.path.realpath(config.get("init_from") or "-"))
        loaded[name] = (model, tok)
        report["loss_curves"][name] = curve = loss_curve(path)
        report["checkpoints"][name] = {
            "path": path,
            "phase": phase,
            "step": config.get("step"),
            "start": start,
            "params": model.num_params(),
            "vocab_size": tok.vocab_size,
            # cost: policy + reference + judge held while training, s per step
            "params_held": config.get("params_held", model.num_params()),
            "judged_by": config.get("judged_by"),
            "step_s": curve and curve["median_step_s"],
        }
        benchmark_sections(cfg, on, report, seconds, inputs, name, model, tok, phase)
        if inputs.picked and (on["tasks"] or on["win"]):
            with clock(seconds, "tasks"):
                replies_section(cfg, report, inputs.picked, name, loaded, start, replies, sampled)
        if inputs.pref_pairs and (name in judges or (not judges and phase in JUDGE_PHASES)):
            import jsft

            with clock(seconds, "judge"):  # each order alone and averaged, consistency, language
                report["judge"][name] = jsft.judge_accuracy(
                    model, tok, inputs.pref_pairs, None, cfg.batch_size
                )
    if rm and inputs.pref_pairs:
        from reward_model import reward_accuracy

        with clock(seconds, "judge"):
            accuracy = reward_accuracy(*rm, inputs.pref_pairs, cfg.batch_size)
            report["judge"]["reward_model"] = accuracy
    if cfg.onpolicy_ckpt in loaded and inputs.picked and on["judge"]:
        with clock(seconds, "judge"):
            onpolicy_section(cfg, report, loaded, inputs.picked, sampled, rm)
    loaded.clear()

    # the sections that compare checkpoints
    if on["win"] and sampled:
        sampled_win_rates(cfg, report, sampled)
    if on["win"] and replies:
        with clock(seconds, "win"):
            win_rate_section(cfg, report, ckpts, inputs.picked, replies, device)
    if on["rejection"] and inputs.eval_tasks:
        with clock(seconds, "rejection"):
            rejection_section(cfg, report, ckpts, inputs.eval_tasks, device, rm)
    report["summary"] = summary_rows(report)
    report["meta"]["seconds"] = {
        **{s: round(v, 2) for s, v in seconds.items()},
        "total": round(time.perf_counter() - t_start, 2),
    }
    return report


def empty_report(cfg, device, notes):
    """The report's skeleton: every section's key, filled in by run()."""
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    return {
        "meta": {
            "config": dataclasses.asdict(cfg),
            "device": device,
            "torch": torch.__version__,
            "machine": machine + (f", {torch.cuda.get_device_name()}" if device == "cuda" else ""),
        },
        "notes": notes,
        "checkpoints": {},
        "loss_curves": {},
        "lm": {},
        "tokenizer": None,
        "fim": {},
        "mc": {},
        "tasks": {},
        "win_rates": {"baseline": cfg.baseline, "verifier": {}, "judge": {}, "sampled": {}},
        "judge": {},
        "onpolicy_judge": None,
        "movement": {},
        "rejection": None,
        "rejection_prompt_ids": None,
    }


def read_inputs(cfg, on, report):
    """What the sections read (the tokenizer report goes straight into the report); a missing
    input skips its sections, with a note."""
    notes = report["notes"]
    if on["tokenizer"]:
        report["tokenizer"] = read_input(
            cfg.tokenizer_report, notes, "no tokenizer table (run tokenizer.py)"
        )
    meta = None
    if on["lm"] or on["fim"]:
        missing = "no LM or FIM section (run data.py)"
        meta = read_input(os.path.join(cfg.data_dir, "meta.json"), notes, missing)
    data_tok = meta and Tokenizer(
        meta["tokenizer"] if os.path.exists(meta.get("tokenizer") or "") else cfg.tokenizer
    )
    groups = list(meta["val"]["groups"]) if meta else []
    eval_tasks = None
    if on["tasks"] or on["win"] or on["judge"] or on["rejection"]:
        missing = "no task, win-rate, on-policy judge or self-rejection section (run tasks.py)"
        eval_tasks = read_input(os.path.join(cfg.tasks_dir, "eval_tasks.jsonl"), notes, missing)
    pref_pairs, prefs_path = [], os.path.join(cfg.tasks_dir, "prefs_eval.jsonl")
    if on["judge"] and not os.path.exists(prefs_path):
        notes.append(f"{prefs_path} not found: no judge accuracy (run tasks.py)")
    elif on["judge"]:
        pref_pairs = read_preferences(prefs_path)
        random.Random(cfg.seed).shuffle(pref_pairs)
        pref_pairs = pref_pairs[: cfg.max_judge_pairs or None]
    return types.SimpleNamespace(
        data_tok=data_tok,
        groups=groups,
        fim_groups=[g for g in names(cfg.fim_groups) if g in groups],
        fim_ckpts=names(cfg.fim_ckpts),  # none named: all
        eval_tasks=eval_tasks,
        picked=pick_tasks(eval_tasks or [], cfg.max_tasks),
        pref_pairs=pref_pairs,
        mc_sets={os.path.basename(p): read_mc(p, cfg.skip_bad) for p in names(cfg.mc)}
        if on["mc"]
        else {},
    )


def benchmark_sections(cfg, on, report, seconds, inputs, name, model, tok, phase):
    """benchmarks.py's sections for one checkpoint: validation loss, FIM (base models), MC."""
    held_out = (model, tok, inputs.data_tok, cfg.data_dir)  # both read data.py's held-out text
    if inputs.data_tok and on["lm"]:
        with clock(seconds, "lm"):
            sizes = dict(seq_len=cfg.seq_len, max_tokens=cfg.max_val_tokens)
            report["lm"][name] = lm_section(
                *held_out, inputs.groups, batch_size=cfg.batch_size, **sizes
            )
    if inputs.data_tok and on["fim"] and (name in inputs.fim_ckpts or not inputs.fim_ckpts):
        with clock(seconds, "fim"):
            fim = (cfg.fim_examples, cfg.fim_chars, cfg.fim_max_new_tokens, cfg.batch_size)
            report["fim"][name] = fim_section(*held_out, inputs.fim_groups, *fim, cfg.seed)
    if inputs.mc_sets:
        with clock(seconds, "mc"):
            report["mc"][name] = {
                f: mc_eval(model, tok, recs, cfg.batch_size, chat=phase != "pretrain")
                for f, recs in inputs.mc_sets.items()
            }


def replies_section(cfg, report, picked, name, loaded, start, replies, sampled):
    """One checkpoint's greedy and sampled replies to the picked prompts, their verifier scores,
    and how far the checkpoint moved from its start; fills replies[name] and sampled[name]."""
    import tasks as task_world

    model, tok = loaded[name]
    contexts = [t["messages"] for t in picked]
    ids = greedy_replies(model, tok, contexts, cfg.max_new_tokens, cfg.batch_size)
    replies[name] = [tok.decode(r) for r in ids]
    report["tasks"][name] = tasks_section(picked, replies[name])
    if not cfg.samples:
        return
    ids = sampled_replies(
        model, tok, contexts, cfg.samples, cfg.max_new_tokens, cfg.seed, cfg.batch_size
    )
    scores = [[task_world.score(t, tok.decode(r)) for r in per] for t, per in zip(picked, ids)]
    sampled[name] = (ids, scores)
    report["tasks"][name]["sampled"] = summarize_scores(
        [t for t in picked for _ in range(cfg.samples)], [x for per in scores for x in per]
    )
    if start in sampled:  # how far this stage moved its policy from its start
        report["movement"][name] = {
            "start": start,
            "log_ratio": log_ratio_to_start(model, loaded[start][0], tok, contexts, ids),
            "changed_greedy": mean(a != b for a, b in zip(replies[name], replies[start])),
            "changed_sampled": mean(a != b for a, b in zip(ids, sampled[start][0])),
        }


def onpolicy_section(cfg, report, loaded, picked, sampled, rm):
    """The SELF-JUDGE start's own samples judged by itself, against the verifier (beside it the
    policy's likelihood and the reward model on the same pairs)."""
    from self_judge import model_judge

    model, tok = loaded[cfg.onpolicy_ckpt]
    # the task section's two samples per prompt are this very draw (same seeds): reused
    drawn = sampled.get(cfg.onpolicy_ckpt, [None])[0] if cfg.samples == 2 else None
    others = {
        "likelihood": likelihood_judge(model, tok, cfg.batch_size),
        **reward_judges(rm, tok, cfg.batch_size),
    }
    judge = model_judge(model, tok, batch_size=cfg.batch_size)
    report["onpolicy_judge"] = dict(
        onpolicy_judge(
            model, tok, judge, picked, cfg.max_new_tokens, cfg.seed, others, drawn, cfg.batch_size
        ),
        policy=cfg.onpolicy_ckpt,
    )


def sampled_win_rates(cfg, report, sampled):
    """Each checkpoint's sampled replies against the baseline's and its start's, prompt by
    prompt, with paired bootstrap intervals."""
    base = sampled.get(cfg.baseline)
    for name, (_, scores) in sampled.items():
        start = report["checkpoints"][name]["start"]
        row = {}
        if base and name != cfg.baseline:
            row["vs_baseline"] = paired_win(sampled_outcomes(scores, base[1]), cfg.seed)
        if start in sampled:
            row["vs_start"] = dict(
                paired_win(sampled_outcomes(scores, sampled[start][1]), cfg.seed), start=start
            )
        report["win_rates"]["sampled"][name] = row


def win_rate_section(cfg, report, ckpts, picked, replies, device):
    """Every checkpoint against the baseline on the same prompts: by the verifier, and by the judge
    checkpoint."""
    import tasks as task_world

    notes, rates = report["notes"], report["win_rates"]
    if cfg.baseline not in replies:
        notes.append(
            f"baseline {cfg.baseline!r} is not among the checkpoints "
            f"({', '.join(replies)}): no win rates"
        )
        return
    base = replies[cfg.baseline]
    base_scores = [task_world.score(t, r) for t, r in zip(picked, base)]
    others = [n for n in replies if n != cfg.baseline]
    for name in others:
        cand_scores = [task_world.score(t, r) for t, r in zip(picked, replies[name])]
        rates["verifier"][name] = win_summary(*verifier_verdicts(cand_scores, base_scores))
    judge_dir = resolve(cfg.judge_ckpt, ckpts)
    if cfg.judge_ckpt and not judge_dir:
        notes.append(f"judge {cfg.judge_ckpt!r} not found: win rates by the verifier only")
    if not judge_dir or not others:
        return
    from self_judge import model_judge

    judge_model, judge_tok, _ = load(judge_dir, device, cfg.tokenizer)
    judge = model_judge(judge_model, judge_tok, batch_size=cfg.batch_size)
    rates["judge_ckpt"] = cfg.judge_ckpt
    contexts = [t["messages"] for t in picked]
    # text, not ids: the judge may tokenize differently from the judged checkpoints
    for name in others:
        rates["judge"][name] = win_summary(*judge_verdicts(judge, contexts, replies[name], base))


def reward_judges(rm, tok, batch_size):
    """{"reward_model": judge_fn} when a reward model that reads `tok`'s ids is loaded, else {}."""
    from reward_model import reward_judge

    if not rm or not filecmp.cmp(rm[1].model_path, tok.model_path, shallow=False):
        return {}
    return {"reward_model": reward_judge(rm[0], rm[1], batch_size)}


def rejection_section(cfg, report, ckpts, eval_tasks, device, rm=None):
    judge_name = cfg.rejection_judge or cfg.rejection_ckpt
    policy_dir, judge_dir = resolve(cfg.rejection_ckpt, ckpts), resolve(judge_name, ckpts)
    if cfg.rejection_ckpt not in ckpts or not judge_dir:
        report["notes"].append(
            f"self-rejection: {cfg.rejection_ckpt!r} (policy) or {judge_name!r} "
            f"(judge) is not a checkpoint here: no N-curve"
        )
        return
    policy, tok, _ = load(policy_dir, device, cfg.tokenizer)
    judge_model, judge_tok = (
        (policy, tok) if judge_dir == policy_dir else load(judge_dir, device, cfg.tokenizer)[:2]
    )
    from self_judge import model_judge

    prompts = pick_tasks(eval_tasks, cfg.rejection_prompts)
    judge = model_judge(judge_model, judge_tok, batch_size=cfg.batch_size)
    same_tokenizer = filecmp.cmp(tok.model_path, judge_tok.model_path, shallow=False)
    curve = rejection_curve(
        policy,
        tok,
        judge,
        prompts,
        cfg.rejection_max_n,
        cfg.max_new_tokens,
        cfg.seed,
        as_text=not same_tokenizer,
        other_judges=reward_judges(rm, tok, cfg.batch_size),
    )
    report["rejection_prompt_ids"] = [t.get("id") for t in prompts]
    report["rejection"] = {
        "policy": cfg.rejection_ckpt,
        "judge": judge_name,
        "n_prompts": len(prompts),
        "curve": curve,
    }


def summary_rows(report):
    def get(section, name, *keys):
        value = section.get(name)
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
        return value

    sampled = report["win_rates"]["sampled"]
    return [
        {
            "checkpoint": name,
            "val_bpb": get(report["lm"], name, "all", "bpb"),
            "overall": get(report["tasks"], name, "overall"),
            "sampled_overall": get(report["tasks"], name, "sampled", "overall"),
            "sampled_correct": get(report["tasks"], name, "sampled", "correct_share"),
            "win_vs_baseline": get(sampled, name, "vs_baseline"),
            "win_vs_start": get(sampled, name, "vs_start"),
            "log_ratio": get(report["movement"], name, "log_ratio"),
            "changed_greedy": get(report["movement"], name, "changed_greedy"),
            "judge_acc": get(report["judge"], name, "acc"),
            "params_held": get(report["checkpoints"], name, "params_held"),
            "step_s": get(report["checkpoints"], name, "step_s"),
        }
        for name in report["checkpoints"]
    ]


def main(argv=None):
    cfg = parse_config(EvalConfig, argv, description=__doc__.split("\n\n")[0])
    print(f"config: {json.dumps(dataclasses.asdict(cfg), ensure_ascii=False)}")
    try:
        with torch_threads(cfg.threads):
            report = run(cfg)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"evaluate.py: {e}")
    write_report(report, cfg.out_dir)
    print(summary_table(report))
    for note in report["notes"]:
        print("note:", note)
    print(
        f"wrote {cfg.out_dir}/report.md and report.json in {report['meta']['seconds']['total']} s"
    )


if __name__ == "__main__":
    main()
