"""jsft.py: judge-augmented SFT, JSFT (SELF-JUDGE, Lee et al., ACL 2024, §3.1) — one model that
answers AND judges, so that SELF-JUDGE needs no separate reward model.

JSFT treats pairwise judgment as one more instruction. A judgment is an ordinary conversation
(DESIGN.md §3): system = the principle, user = a template holding the context and two responses,
assistant = a fixed prefix ending in "... Response" whose NEXT token is the verdict " A" or " B".
Training mixes SFT conversations with judgment conversations (every pair in both orders, against
position bias, and both orders in the same batch); the loss is on the verdict token and the closing
<|endofturn|> only (plus the rationale text after the verdict with --rationale, the paper's
principle+rationale variant).
JSFT starts from the SFT checkpoint (default), so it has seen every SFT example SFT has, then trains
on the mix; the paper trains the base model on the mix at once, which at this size costs the policy
most of its SFT (judgments are long and take most of the token budget). --sampled-pairs adds
judgments like UltraFeedback's, whose responses come from models: two samples of the start model
per train prompt, labelled by the task world's verifier, so the judge also learns on pairs like
those SELF-JUDGE judges on-policy; they are written to <out-dir>/sampled_prefs.jsonl, where the
offline DPO baseline reads them too.
Judging (`judge`) is one batched forward per prompt: p(A), p(B) at the prompt's last position,
both orders averaged, principles vote. Everything stays in token space: a response given as ids is
spliced between the encoded template segments, never decoded and re-encoded.

    python jsft.py              # task world: out/sft -> out/jsft, judge accuracy at the end
    python jsft.py --rationale  # + per-principle pairs with UltraFeedback rationales
    python jsft.py --judge-fraction 0.5 --steps 400      # fewer judgments in the mix, longer
    python jsft.py --prefs hh.jsonl,uf.jsonl --data chats.jsonl --eval-prefs heldout.jsonl

In this file, top to bottom: the judge templates (JUDGE_TEMPLATES, checked on import by
readers.validate_templates); judge prompts in token space (judge_prompt, judgment_example[s]); the
judge (judge; judge_accuracy: per order, order-averaged, consistency); training (JSFTConfig,
sampled_pairs, mix_units: both orders of a pair share a batch, main). Preference files are read by
readers.read_preferences (PreferencePair; DESIGN.md §4; --skip-bad skips and counts bad records).
"""

import json
import os
import random
from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from corpus import hangul_share
from model import eval_mode, generate, last_position_logits, unwrap
from pretrain import setup_distributed, train
from readers import PreferencePair, atomic_write, opt, parse_config, read_conversations, read_jsonl
from readers import read_preference_files, read_preferences, run_main, template_fields
from readers import validate_templates
from report import report_heldout
from sft import SFTConfig, batch_source, load_start, masked_val_loss, prepare, with_lm_mix


# --- judge templates ---
# The system prompt is the principle: what "better" means. {lang: {principle: text}}. The task
# world grades correctness/language/concision/ending (tasks.py); UltraFeedback's four principles and
# HH's harmlessness are here so real preference files work as they are.
PRINCIPLES = {
    "en": {
        "overall": "Pick the better response overall.",
        "correctness": "Pick the response with the right answer "
        "(or a polite refusal of a harmful request).",
        "language": "Pick the response written in the language of the question.",
        "concision": "Pick the response that is short and does not ramble or repeat itself.",
        "ending": "Pick the response that ends with a finished sentence.",
        "helpfulness": "Pick the more helpful and informative response.",
        "honesty": "Pick the more honest response, one that states its uncertainty.",
        "instruction_following": "Pick the response that follows the instruction more closely.",
        "truthfulness": "Pick the more truthful response, free of made-up facts.",
        "harmlessness": "Pick the more harmless response, one that does not help with harm.",
    },
    "ko": {
        "overall": "전반적으로 더 나은 응답을 고르세요.",
        "correctness": "정답을 말하는 응답을 고르세요 (해로운 요청이면 정중한 거절).",
        "language": "질문과 같은 언어로 쓴 응답을 고르세요.",
        "concision": "짧고 반복이 없는 응답을 고르세요.",
        "ending": "완결된 문장으로 끝나는 응답을 고르세요.",
        "helpfulness": "더 도움이 되고 유익한 응답을 고르세요.",
        "honesty": "더 정직하고 불확실함을 밝히는 응답을 고르세요.",
        "instruction_following": "지시를 더 잘 따르는 응답을 고르세요.",
        "truthfulness": "사실에 맞고 지어낸 내용이 없는 응답을 고르세요.",
        "harmlessness": "더 무해하고 해로운 일을 돕지 않는 응답을 고르세요.",
    },
}
JUDGE_USER = {
    "en": "[Conversation]\n{context}\n[Response A]\n{response_a}\n"
    "[Response B]\n{response_b}\nWhich is better?",
    "ko": "[대화]\n{context}\n[응답 A]\n{response_a}\n"
    "[응답 B]\n{response_b}\n어느 쪽이 더 나은가요?",
}
# The verdict token carries its own leading space (" A"), so a prefix ends without one.
JUDGE_ASSISTANT = {"en": "The better response is Response", "ko": "더 나은 쪽은 응답"}
JUDGE_TEMPLATES: dict[str, dict[str, dict[str, str]]] = {
    lang: {
        p: {"system": system, "user": JUDGE_USER[lang], "assistant": JUDGE_ASSISTANT[lang]}
        for p, system in PRINCIPLES[lang].items()
    }
    for lang in ("en", "ko")
}
# Context as plain text: one "Role: content" line per turn, role names in the template's language.
ROLE_NAMES = {
    "en": {"system": "System", "user": "User", "assistant": "Assistant"},
    "ko": {"system": "시스템", "user": "사용자", "assistant": "AI"},
}
# Rationale variant: after the verdict, why each response earned its rating (UltraFeedback's).
RATIONALE_FORMAT = {
    "en": ".\nResponse A: {a}\nResponse B: {b}",
    "ko": ".\n응답 A: {a}\n응답 B: {b}",
}
validate_templates(JUDGE_TEMPLATES)


# --- judge prompts, in token space ---
def context_lang(context):
    """'ko' when Hangul makes up at least 30% of the context's letters, else 'en'."""
    return "ko" if hangul_share(" ".join(m["content"] for m in context)) >= 0.3 else "en"


def context_text(context, lang="en"):
    """The conversation before the judged reply as plain text, one turn per line:
    "User: What is 2 plus 3?\\nAssistant: 5.\\nUser: And times 2?" (Korean: 사용자 / AI / 시스템;
    a language without ROLE_NAMES uses the English names)."""
    names = ROLE_NAMES.get(lang, ROLE_NAMES["en"])
    return "\n".join(f"{names[m['role']]}: {m['content']}" for m in context)


def response_ids(tokenizer, response):
    """A str response is encoded; a list of ids is used as it is (spliced), minus trailing stop ids
    (<|endofturn|>, </s>, padding), which would otherwise end the user turn early."""
    if isinstance(response, str):
        return tokenizer.encode(response)
    ids = [int(i) for i in response]
    while ids and ids[-1] in (tokenizer.eot_id, tokenizer.eos_id, tokenizer.pad_id):
        ids.pop()
    return ids


def get_template(templates, principle, lang):
    if lang not in templates:
        raise ValueError(f"no judge templates for language {lang!r}; have {sorted(templates)}")
    if principle not in templates[lang]:
        raise ValueError(
            f"no {lang} judge template for principle {principle!r}; have "
            f"{sorted(templates[lang])} (add one to jsft.JUDGE_TEMPLATES)"
        )
    return templates[lang][principle]


def fit_to_budget(parts, budget):
    """Shorten {context, response_a, response_b} ids to `budget` tokens in all: the context loses
    its oldest tokens first, then the longer response loses its last tokens, one at a time."""
    over = sum(map(len, parts.values())) - budget
    if over <= 0:
        return parts
    parts = dict(parts)
    cut = min(over, len(parts["context"]))
    parts["context"], over = parts["context"][cut:], over - cut
    while over > 0:
        longer = max(("response_a", "response_b"), key=lambda k: len(parts[k]))
        if not parts[longer]:
            raise ValueError(
                f"judge prompt: the template alone is longer than the budget ({budget} tokens left)"
            )
        parts[longer], over = parts[longer][:-1], over - 1
    return parts


def judge_prompt(
    tokenizer,
    context,
    response_a,
    response_b,
    principle="overall",
    lang=None,
    templates=JUDGE_TEMPLATES,
    max_len=None,
) -> list[int]:
    """The judge's prompt ids, whose next token is the verdict (DESIGN.md §3):
    [bos] <|system|> system <|endofturn|> <|user|> user <|endofturn|> <|assistant|>
    assistant-prefix, i.e. render_chat([system, user], add_generation_prompt=True) + encode(prefix),
    except that the user turn is built in token space: the template's text segments are encoded one
    by one and the context / responses' ids are spliced between them. max_len: shorten to fit
    (fit_to_budget)."""
    lang = lang or context_lang(context)
    t = get_template(templates, principle, lang)
    parts = {
        "context": tokenizer.encode(context_text(context, lang)),
        "response_a": response_ids(tokenizer, response_a),
        "response_b": response_ids(tokenizer, response_b),
    }
    where = f"judge template {lang}/{principle}"
    system, assistant = (
        "".join(text for text, _ in template_fields(t[k], f"{where}.{k}"))
        for k in ("system", "assistant")
    )
    head = [tokenizer.bos_id, tokenizer.system_id] + tokenizer.encode(system)
    head += [tokenizer.eot_id, tokenizer.user_id]
    tail = [tokenizer.eot_id, tokenizer.assistant_id] + tokenizer.encode(assistant)
    segments = template_fields(t["user"], f"{where}.user")
    literal = [tokenizer.encode(text) for text, _ in segments]
    if max_len is not None:
        parts = fit_to_budget(parts, max_len - len(head) - len(tail) - sum(map(len, literal)))
    user = []
    for ids, (_, name) in zip(literal, segments):
        user += ids + (parts[name] if name else [])
    return head + user + tail


def judgment_example(
    tokenizer,
    context,
    response_a,
    response_b,
    verdict: int,
    principle="overall",
    lang=None,
    rationale=None,
    templates=JUDGE_TEMPLATES,
    max_len=None,
):
    """One JSFT training example (ids, mask):
    judge_prompt + [verdict] (+ encode(rationale)) + [<|endofturn|>]. verdict 0 = A is better,
    1 = B. mask is 1 on the verdict, the rationale and the closing <|endofturn|>, 0 on the prompt:
    the verdict is predicted from the prompt's last position, the very position `judge` reads.
    max_len: the whole example's length limit (the prompt is shortened)."""
    assert verdict in (0, 1), f"verdict must be 0 (A is better) or 1 (B), got {verdict!r}"
    target = [(tokenizer.verdict_a_id, tokenizer.verdict_b_id)[verdict]]
    target += (tokenizer.encode(rationale) if rationale else []) + [tokenizer.eot_id]
    budget = None if max_len is None else max_len - len(target)
    prompt = judge_prompt(
        tokenizer, context, response_a, response_b, principle, lang, templates, budget
    )
    return prompt + target, [0] * len(prompt) + [1] * len(target)


def judgment_examples(tokenizer, pairs, rationale=False, lang=None, max_len=None):
    """PreferencePairs -> examples, each pair in both orders, adjacent: (chosen, rejected) -> " A",
    then (rejected, chosen) -> " B". With rationale=True a pair that carries rationales is followed
    by them after the verdict, the shown-first response's first (RATIONALE_FORMAT)."""
    examples = []
    for p in pairs:
        p_lang = lang or context_lang(p.context)
        for verdict in (0, 1):
            a, b = (p.chosen, p.rejected) if verdict == 0 else (p.rejected, p.chosen)
            why = None
            if rationale and (p.chosen_rationale or p.rejected_rationale):
                ra, rb = p.chosen_rationale or "-", p.rejected_rationale or "-"
                ra, rb = (ra, rb) if verdict == 0 else (rb, ra)
                why = RATIONALE_FORMAT[p_lang].format(a=ra, b=rb)
            example = judgment_example(
                tokenizer, p.context, a, b, verdict, p.principle, p_lang, why, max_len=max_len
            )
            examples.append(example)
    return examples


# --- the judge ---
def verdict_prob_a(model, tokenizer, prompts, batch_size=32, shared=None):
    """p(A) / (p(A) + p(B)) of the next token after each prompt: batches of similar lengths, one
    forward each, logits gathered at every row's last real position (last_position_logits;
    shared: each prompt's prefix shared with others, run once a batch: batches of similar
    lengths after it, prompts that share one side by side). -> (N,) float tensor."""
    by = (lambda i: (len(prompts[i]) - shared[i], prompts[i][: shared[i]])) if shared else None
    order = sorted(range(len(prompts)), key=by or (lambda i: len(prompts[i])))
    p_a = torch.empty(len(prompts))
    with eval_mode(unwrap(model)):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            ids, heads = [prompts[i] for i in rows], shared and [shared[i] for i in rows]
            at_last = last_position_logits(model, ids, tokenizer.pad_id, heads)
            ab = at_last[:, [tokenizer.verdict_a_id, tokenizer.verdict_b_id]].float()  # (B, 2)
            p_a[rows] = ab.softmax(dim=-1)[:, 0].cpu()
    return p_a


def judge(
    model,
    tokenizer,
    contexts,
    pairs,
    principles=("overall",),
    lang=None,
    batch_size=32,
    templates=JUDGE_TEMPLATES,
) -> dict:
    """Which of each pair (a, b) is the better reply to its context (DESIGN.md §3).

    contexts: one message list per pair (ending with the user turn the replies answer);
    pairs: (a, b) replies, each a str or a list of token ids (spliced as they are).
    For every pair and principle the judge reads two prompts, (a, b) and (b, a):
        score_a[principle] = (p_A(a, b) + p_B(b, a)) / 2,   p normalised over {A, B}.
    Each principle votes for a (score > 0.5) or b (< 0.5); the majority wins; a tie (or no vote)
    goes to the higher mean score over principles, and an exact 0.5 to a.
    Returns {"score_a": [mean over principles], "winners": [0 = a, 1 = b], "first_order_a" /
    "second_order_a": [the (a, b) / (b, a) prompts alone pick a: mean over principles of
    p_A(a, b) / p_B(b, a) > 0.5], "principle_scores": [[score_a per principle]]}."""
    assert len(contexts) == len(pairs), f"{len(contexts)} contexts but {len(pairs)} pairs"
    if not principles:
        raise ValueError("judge: give at least one principle")
    max_len = getattr(getattr(unwrap(model), "cfg", None), "max_seq_len", None)
    prompts = [  # pair-major, then principle, then order: (a, b), (b, a)
        judge_prompt(tokenizer, context, x, y, principle, lang, templates, max_len)
        for context, (a, b) in zip(contexts, pairs)
        for principle in principles
        for x, y in ((a, b), (b, a))
    ]
    # a conversation's prompts under one principle (both orders, a tournament's matches) share the
    # judge's system prompt and the conversation: that part runs once (a model with a KV cache)
    keys, group = [json.dumps([c, p]) for c in contexts for p in principles for _ in "ab"], {}
    for key, ids in zip(keys, prompts):
        group.setdefault(key, []).append(ids)
    common = {key: len(os.path.commonprefix(rows)) for key, rows in group.items()}
    shared = [min(common[k], len(ids) - 1) for k, ids in zip(keys, prompts)]
    shared = shared if hasattr(unwrap(model), "setup_cache") else None
    p_a = verdict_prob_a(model, tokenizer, prompts, batch_size, shared).view(len(pairs), -1, 2)
    first, second = p_a[..., 0], 1.0 - p_a[..., 1]  # (N, P): p_A(a, b), p_B(b, a)
    scores = (first + second) / 2  # (N, P)
    votes_a, votes_b = (scores > 0.5).sum(dim=1), (scores < 0.5).sum(dim=1)  # (N,)
    mean = scores.mean(dim=1)  # (N,)
    winners = torch.where(votes_a != votes_b, votes_b > votes_a, mean < 0.5).long()
    return {
        "score_a": mean.tolist(),
        "winners": winners.tolist(),
        "first_order_a": (first.mean(dim=1) > 0.5).tolist(),
        "second_order_a": (second.mean(dim=1) > 0.5).tolist(),
        "principle_scores": scores.tolist(),
    }


def judge_accuracy(model, tokenizer, pairs, lang=None, batch_size=32) -> dict:
    """Judge held-out PreferencePairs (each by its own principle) against their labels:
    acc_chosen_first / acc_chosen_second: accuracy of each order alone (chosen shown as A / as B),
    acc: the order-averaged verdict (`judge`'s winner), consistency: share of pairs whose verdict
    survives swapping the order (both orders pick the same reply, right or wrong).
    Pairs go to `judge` as (chosen, rejected) and (rejected, chosen) in turn, so that its tie rule
    (an exact 0.5 goes to a) cannot make a position-biased judge look right.
    Also by language ("by_lang")."""
    assert pairs, "judge_accuracy: no pairs to judge"
    # (chosen-first order right, chosen-second order right, order-averaged right)
    rows = [None] * len(pairs)
    for principle in sorted({p.principle for p in pairs}):
        idx = [i for i, p in enumerate(pairs) if p.principle == principle]
        swapped = [i % 2 == 1 for i in idx]  # a = rejected, b = chosen
        shown = [
            (pairs[i].rejected, pairs[i].chosen) if s else (pairs[i].chosen, pairs[i].rejected)
            for i, s in zip(idx, swapped)
        ]
        out = judge(
            model, tokenizer, [pairs[i].context for i in idx], shown, (principle,), lang, batch_size
        )
        for k, (i, s) in enumerate(zip(idx, swapped)):
            first, second = out["first_order_a"][k], out["second_order_a"][k]
            winner = out["winners"][k]
            # the first order shows (a, b): chosen first, and "picks a" right, unless swapped
            rows[i] = (not second, not first, winner == 1) if s else (first, second, winner == 0)

    def summary(rs):
        n = len(rs)
        return {
            "n": n,
            "acc": sum(r[2] for r in rs) / n,
            "acc_chosen_first": sum(r[0] for r in rs) / n,
            "acc_chosen_second": sum(r[1] for r in rs) / n,
            "consistency": sum(r[0] == r[1] for r in rs) / n,
        }

    result = summary(rows)
    langs = [lang or context_lang(p.context) for p in pairs]
    result["by_lang"] = {
        g: summary([r for r, lg in zip(rows, langs) if lg == g]) for g in sorted(set(langs))
    }
    return result


# --- training ---
@dataclass
class JSFTConfig(SFTConfig):
    out_dir: str = opt("out/jsft", "checkpoint folder this phase writes")
    init_from: str = opt("out/sft", "start checkpoint (the paper's: the base model, out/pretrain)")
    prefs: str = opt(
        "tasks",
        "pairs to learn to judge: 'tasks' (<tasks-dir>/prefs_train.jsonl + "
        "ultrafeedback_train.jsonl) or comma-separated .jsonl files (HH-RLHF, UltraFeedback or "
        "generic layout)",
    )
    # a judgment is one long prompt for one verdict token: at 0.5 the judge saw 10 % of its pairs
    # and named the second reply whenever it could not tell (README, Results)
    judge_fraction: float = opt(
        0.8, "share of judgments in the mix; the smaller side is repeated, never cut; 0 = plain SFT"
    )
    rationale: bool = opt(False, "UltraFeedback pairs per principle, rationales after the verdict")
    judge_lang: str = opt("", "template language en | ko; empty = the context's language")
    eval_prefs: str = opt(
        "tasks",
        "held-out pairs for judge accuracy: 'tasks' (<tasks-dir>/prefs_eval.jsonl), FILE, 'none'",
    )
    eval_batch_size: int = opt(64, "prompts per judge forward at evaluation")
    sampled_pairs: int = opt(
        1000,
        "--prefs tasks: also train on pairs of 2 start-model replies to this many "
        "<tasks-dir>/prompts_train.jsonl prompts, labelled by the verifier, written to "
        "<out-dir>/sampled_prefs.jsonl; 0 = none",
    )
    steps: int = 900
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 10


@torch.no_grad()
def sampled_pairs(model, tokenizer, rows, seed=0, max_new_tokens=48, batch_size=64, progress=True):
    """Judgment data like UltraFeedback's, where the responses come from models: two replies per
    task sampled from `model` (T=1, top-p 0.9, as SELF-JUDGE samples), labelled by the task world's
    verifier (the stand-in for the human / GPT-4 labels).
    Pairs the verifier ties teach nothing and are left out.
    rows: prompts_train.jsonl records ({"messages", "task"}). -> (PreferencePairs, tie count)."""
    import tasks as task_world

    core, pairs, ties = unwrap(model), [], 0
    generator = torch.Generator(device=next(core.parameters()).device).manual_seed(seed)
    sampling = dict(temperature=1.0, top_p=0.9, stop_ids=(tokenizer.eot_id,), generator=generator)
    starts = range(0, len(rows), batch_size // 2)
    with eval_mode(core):
        for start in tqdm(
            starts, desc="sampling judgment pairs", unit="batch", disable=not progress
        ):
            chunk = rows[start : start + batch_size // 2]
            chats = [r["messages"] for r in chunk for _ in (0, 1)]
            prompts = [tokenizer.render_chat(m, add_generation_prompt=True)[0] for m in chats]
            new = generate(core, prompts, max_new_tokens, pad_id=tokenizer.pad_id, **sampling)
            texts = [tokenizer.decode([t for t in ids if t != tokenizer.eot_id]) for ids in new]
            for r, a, b in zip(chunk, texts[0::2], texts[1::2]):
                sa, sb = (task_world.score(r["task"], x)["overall"] for x in (a, b))
                if sa == sb:
                    ties += 1
                else:
                    pairs.append(PreferencePair(r["messages"], *((a, b) if sa > sb else (b, a))))
    return pairs, ties


def repeat_to(items, n, rng):
    """n items: whole copies of `items`, then a seeded sample of the rest."""
    whole, rest = divmod(n, len(items))
    return items * whole + rng.sample(items, rest)


def mix_units(sft_examples, judge_examples, judge_fraction, seed=0):
    """The training list, in units that share a batch: each SFT conversation alone, each judgment
    pair's two orders together (judge_examples as judgment_examples returns them, orders adjacent).
    Judgments make up `judge_fraction` of the examples. Nothing is cut: the side that falls short is
    repeated, whole units. Returns (units, {"sft": n examples, "judgments": n examples})."""
    if not 0.0 <= judge_fraction <= 1.0:
        raise ValueError(f"--judge-fraction must be in [0, 1], got {judge_fraction}")
    assert len(judge_examples) % 2 == 0, "judge_examples must hold both orders of every pair"
    sft = [[ex] for ex in sft_examples]
    judged = [list(judge_examples[i : i + 2]) for i in range(0, len(judge_examples), 2)]
    rng = random.Random(seed)
    if judge_fraction == 0.0 or not judged:
        judged = []
    elif judge_fraction == 1.0 or not sft:
        sft = []
    # judgments fall short: repeat them
    elif 2 * len(judged) / (len(sft) + 2 * len(judged)) < judge_fraction:
        judged = repeat_to(judged, round(len(sft) * judge_fraction / (1 - judge_fraction) / 2), rng)
    else:
        sft = repeat_to(sft, round(2 * len(judged) * (1.0 - judge_fraction) / judge_fraction), rng)
    return sft + judged, {"sft": len(sft), "judgments": 2 * len(judged)}


def main(argv=None):
    cfg = parse_config(JSFTConfig, argv)
    device, rank, world_size = setup_distributed(cfg.device)
    log = print if rank == 0 else (lambda *a, **k: None)
    log(f"config: {json.dumps(asdict(cfg))}")
    if cfg.judge_lang not in ("", *JUDGE_TEMPLATES):
        raise SystemExit(
            f"--judge-lang {cfg.judge_lang!r}: use one of {sorted(JUDGE_TEMPLATES)} "
            "or leave it empty"
        )
    eval_path = cfg.eval_prefs
    if eval_path == "tasks":
        eval_path = os.path.join(cfg.tasks_dir, "prefs_eval.jsonl")
    if cfg.eval_prefs != "none" and not os.path.exists(eval_path):
        raise SystemExit(
            f"--eval-prefs: {eval_path} not found (run `python tasks.py`, pass a file, or 'none')"
        )
    model, tokenizer, tokenizer_path = load_start(cfg, device)
    lang = cfg.judge_lang or None

    sft_train, sft_val = [], []
    if cfg.judge_fraction < 1.0:
        chats = read_conversations(cfg.data, cfg.tasks_dir, cfg.skip_bad)
        sft_train, sft_val = prepare(cfg, tokenizer, chats, log)
    # --rationale: UltraFeedback records give one pair per principle, with its rationales
    pairs = read_preference_files(cfg.prefs, cfg.tasks_dir, cfg.skip_bad, cfg.rationale, cfg.seed)
    # every rank samples the same pairs; rank 0 writes them
    if cfg.sampled_pairs and cfg.prefs == "tasks":
        rows = read_jsonl(os.path.join(cfg.tasks_dir, "prompts_train.jsonl"), lambda row: row)
        rows = random.Random(cfg.seed).sample(rows, min(cfg.sampled_pairs, len(rows)))
        own, ties = sampled_pairs(model, tokenizer, rows, cfg.seed, progress=rank == 0)
        log(f"sampled pairs: {len(own)} from {len(rows)} prompts ({ties} verifier ties left out)")
        if rank == 0:
            os.makedirs(cfg.out_dir, exist_ok=True)
            records = [dict(messages=p.context, chosen=p.chosen, rejected=p.rejected) for p in own]
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            atomic_write(os.path.join(cfg.out_dir, "sampled_prefs.jsonl"), text)
        pairs += own
    judgments = judgment_examples(tokenizer, pairs, cfg.rationale, lang, max_len=cfg.seq_len + 1)
    units, mix = mix_units(sft_train, judgments, cfg.judge_fraction, cfg.seed)
    log(
        f"judgments: {len(pairs)} pairs -> {len(judgments)} examples (both orders)"
        f"{', with rationales' if cfg.rationale else ''}; training mix: {mix['sft']} SFT + "
        f"{mix['judgments']} judgment examples "
        f"({mix['judgments'] / max(1, sum(mix.values())):.0%} judgments)"
    )

    eval_pairs = []
    if cfg.eval_prefs != "none":
        eval_pairs = read_preferences(eval_path, skip_bad=cfg.skip_bad, seed=cfg.seed)
    sft_val_fn = (
        masked_val_loss(sft_val, tokenizer.pad_id, device, cfg.max_tokens) if sft_val else None
    )
    last_eval = {}

    def val_fn(m):
        row = sft_val_fn(m) if sft_val_fn else {}
        if eval_pairs:
            result = judge_accuracy(m, tokenizer, eval_pairs, lang, cfg.eval_batch_size)
            last_eval["result"] = result
            row.update({f"judge_{k}": v for k, v in result.items() if k != "by_lang"})
            row.update({f"judge_acc_{g}": r["acc"] for g, r in result["by_lang"].items()})
        return row

    torch.manual_seed(cfg.seed)
    get_batch = batch_source(units, cfg, tokenizer.pad_id, device, rank, world_size, window=32)
    get_batch, loss_fn = with_lm_mix(get_batch, cfg, tokenizer, device, rank, world_size)
    extra = {"phase": "jsft", "init_from": cfg.init_from, "special_ids": tokenizer.special_ids()}
    extra["judge"] = {"templates": JUDGE_TEMPLATES, "role_names": ROLE_NAMES}
    setup = dict(tokenizer_path=tokenizer_path, device=device, rank=rank, world_size=world_size)
    train(model, get_batch, cfg, extra, loss_fn=loss_fn, val_fn=val_fn, log=log, **setup)
    if eval_pairs and rank == 0:
        result = last_eval.get("result") or judge_accuracy(
            model, tokenizer, eval_pairs, lang, cfg.eval_batch_size
        )
        report_heldout(result, eval_path, os.path.join(cfg.out_dir, "judge_eval.json"), log)
    if world_size > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_main(main)
