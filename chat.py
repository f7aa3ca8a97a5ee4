"""chat.py — talk to any minihcx checkpoint in the HyperCLOVA X chat format (HCX §2.2.1, DESIGN.md
§2).

The conversation is rendered with the tokenizer's chat renderer, ending in `<|assistant|>`; the
reply is sampled with the model's KV-cache generator, streamed token by token, and stops at
`<|endofturn|>`.

Self-rejection (SELF-JUDGE, Lee et al., ACL 2024, §3.3): with --best-of N each reply is the winner
of a knockout tournament among N samples (temperature 1, top-p 0.9 unless given), judged by the
same checkpoint (jsft.judge) in N - 1 pairwise judgments; shown once decided, not streamed.
It replaces `self_judge.py --best-of` (whose defaults were --seed 1337 and 48 new tokens; here
--seed 0, --max-new-tokens 128 and --device cpu, like every chat).

    python chat.py --ckpt out/self_judge                # interactive; /reset clears, /quit leaves
    python chat.py --ckpt out/sft --system "Be brief."  # with a system prompt
    python chat.py --ckpt out/sft --prompt "23 더하기 45는 얼마인가요?"   # one-shot, for scripts
    python chat.py --best-of 8 --prompt "What is 3 plus 4?"  # self-rejection: best of 8 samples
    python chat.py --best-of 8 --prompts out/tasks/eval_tasks.jsonl  # a file: JSON lines
                                                                      # {"prompt", "response"}
"""

import argparse
import json
import os
import random
import sys

import torch

from model import generate
from pretrain import find_checkpoint, load_model
from readers import fitting_prompts, run_main
from self_judge import knockout, model_judge, sample_responses
from sft import seed_of
from tokenizer import Tokenizer


def tournament(contexts, candidates, judge_pairs, seed):
    """Best of N by a knockout tournament, for many contexts at once. candidates[i]: context i's
    N_i candidates (any N_i >= 1); per context the bracket order is shuffled by
    random.Random(seed, i). Returns the index of each context's winner in candidates[i]."""
    brackets = []
    for i, cands in enumerate(candidates):
        if not cands:
            raise ValueError(f"tournament: context {i} has no candidates")
        order = list(range(len(cands)))
        random.Random(seed_of(seed, i)).shuffle(order)
        brackets.append(order)
    return [b[0] for b in knockout(contexts, candidates, judge_pairs, brackets)[-1]]


def best_of_n(
    model,
    judge_model,
    tokenizer,
    contexts,
    n,
    max_new_tokens=48,
    temperature=1.0,
    top_p=0.9,
    seed=0,
    principles=("overall",),
    judge_fn=None,
):
    """Self-rejection: sample n responses per context, return each context's tournament winner (id
    list). judge_model judges (pass the model itself for self-rejection); judge_fn overrides it."""
    samples = sample_responses(
        model, tokenizer, contexts, n, max_new_tokens, temperature, top_p, seed
    )
    if n == 1:
        return [s[0] for s in samples]
    judge_fn = judge_fn or model_judge(judge_model, tokenizer, principles)
    winners = tournament(contexts, samples, lambda c, p: judge_fn(c, p)["winners"], seed)
    return [s[w] for s, w in zip(samples, winners)]


def reply(
    model,
    tokenizer,
    messages,
    max_new_tokens=128,
    temperature=0.0,
    top_p=None,
    seed=0,
    stream=None,
    best_of=1,
    principles=("overall",),
):
    """Generate the assistant's next turn for `messages`; returns its text (without the
    end-of-turn). stream(text_piece) is called as tokens arrive (decoded incrementally, so
    multi-byte Korean stays whole). best_of > 1: the self-judged best of that many samples
    (best_of_n), streamed whole once the tournament is decided."""
    ids, _ = tokenizer.render_chat(messages, add_generation_prompt=True)
    room = model.cfg.max_seq_len - len(ids)
    if room <= 0:
        raise ValueError(
            f"the conversation is {len(ids)} tokens, the model's context is "
            f"{model.cfg.max_seq_len}: /reset"
        )
    max_new_tokens = min(max_new_tokens, room)
    if best_of > 1:
        (winner,) = best_of_n(
            model,
            model,
            tokenizer,
            [messages],
            best_of,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            principles,
        )
        text = tokenizer.decode(winner)  # control ids, the end of turn among them, are skipped
        if stream:
            stream(text)
        return text
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    shown, new = [""], []

    def on_token(step_tokens):
        if step_tokens[0] is None or step_tokens[0] == tokenizer.eot_id:
            return
        new.append(step_tokens[0])
        text = tokenizer.decode(new)
        if stream and not text.endswith("\ufffd"):  # wait for the rest of a split UTF-8 character
            stream(text[len(shown[0]) :])
            shown[0] = text

    sampling = dict(temperature=temperature, top_p=top_p, generator=generator)
    stops = dict(stop_ids=(tokenizer.eot_id,), pad_id=tokenizer.pad_id)
    out = generate(model, [ids], max_new_tokens, on_token=on_token, **sampling, **stops)[0]
    text = tokenizer.decode([t for t in out if t != tokenizer.eot_id])
    if stream and len(text) > len(shown[0]):
        stream(text[len(shown[0]) :])
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument(
        "--ckpt",
        default="out/self_judge",
        help="checkpoint folder (model.pt, config.json, tokenizer.model)",
    )
    ap.add_argument("--prompt", default=None, help="one-shot: answer this and exit")
    ap.add_argument(
        "--prompts",
        default=None,
        help="batch: answer every prompt of this file (readers.read_prompts layouts), "
        'print JSON lines {"prompt", "response"}, exit',
    )
    ap.add_argument("--system", default=None, help="system prompt (not with --prompts)")
    ap.add_argument(
        "--best-of",
        type=int,
        default=1,
        help="self-rejection: sample N replies, show the winner of a knockout "
        "tournament judged by the same checkpoint (1 = the plain reply)",
    )
    ap.add_argument(
        "--principles",
        default="overall",
        help="--best-of: comma-separated judge principles (majority vote, jsft.judge)",
    )
    ap.add_argument("--max-new-tokens", type=int, default=128, help="cap on a reply, in tokens")
    ap.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="0 = greedy; unset: 0, or 1 with --best-of > 1",
    )
    ap.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling (T > 0)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampled replies")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | mps")
    args = ap.parse_args(argv)
    if args.best_of < 1:
        ap.error("--best-of must be >= 1")
    if args.prompts is not None and (args.prompt is not None or args.system):
        ap.error("--prompts answers a file's prompts as they are: not with --prompt or --system")

    ckpt = find_checkpoint(args.ckpt) or args.ckpt  # a run folder: its newest complete save
    tok_path = os.path.join(ckpt, "tokenizer.model")
    if not os.path.exists(tok_path):
        raise SystemExit(
            f"{tok_path} not found: --ckpt must be a checkpoint folder written by a minihcx phase"
        )
    model, _ = load_model(ckpt, args.device)
    model.eval()
    tokenizer = Tokenizer(tok_path)
    temperature = args.temperature
    if temperature is None:
        temperature = 1.0 if args.best_of > 1 else 0.0
    top_p = args.top_p if temperature > 0 else None
    principles = args.principles.split(",")
    system = [{"role": "system", "content": args.system}] if args.system else []

    def write(piece):
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.prompts is not None:
        contexts = fitting_prompts(
            args.prompts, tokenizer, args.max_new_tokens, model.cfg.max_seq_len, "prompts"
        )
        winners = best_of_n(
            model,
            model,
            tokenizer,
            contexts,
            args.best_of,
            args.max_new_tokens,
            temperature,
            top_p,
            args.seed,
            principles,
        )
        for context, ids in zip(contexts, winners):
            print(
                json.dumps(
                    {"prompt": context[-1]["content"], "response": tokenizer.decode(ids)},
                    ensure_ascii=False,
                )
            )
        return

    def answer(messages):  # the reply to the last user turn, streamed as it is sampled
        return reply(
            model,
            tokenizer,
            messages,
            args.max_new_tokens,
            temperature,
            top_p,
            args.seed,
            stream=write,
            best_of=args.best_of,
            principles=principles,
        )

    if args.prompt is not None:
        answer(system + [{"role": "user", "content": args.prompt}])
        print()
        return
    messages = list(system)
    print(f"chatting with {args.ckpt} — /reset clears the conversation, /quit leaves")
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if line.strip() in ("/quit", "/exit"):
            return
        if line.strip() == "/reset":
            messages = list(system)
            print("(conversation cleared)")
            continue
        messages.append({"role": "user", "content": line})
        write("bot> ")
        try:
            text = answer(messages)
        except ValueError as exc:
            print(f"\n({exc})")
            messages.pop()
            continue
        print()
        messages.append({"role": "assistant", "content": text})


if __name__ == "__main__":
    run_main(main)
