"""chat.py — talk to any minihcx checkpoint in the HyperCLOVA X chat format (HCX §2.2.1, DESIGN.md
§2).

The conversation is rendered with the tokenizer's chat renderer, ending in `<|assistant|>`; the
reply is sampled with the model's KV-cache generator, streamed token by token, and stops at
`<|endofturn|>`.

    python chat.py --ckpt out/self_judge                # interactive; /reset clears, /quit leaves
    python chat.py --ckpt out/sft --system "Be brief."  # with a system prompt
    python chat.py --ckpt out/sft --prompt "23 더하기 45는 얼마인가요?"   # one-shot, for scripts
"""
import argparse
import os
import sys

import torch

from model import generate
from pretrain import find_checkpoint, load_model
from tokenizer import Tokenizer


def reply(model, tokenizer, messages, max_new_tokens=128, temperature=0.0, top_p=None, seed=0,
          stream=None):
    """Generate the assistant's next turn for `messages`; returns its text (without the
    end-of-turn). stream(text_piece) is called as tokens arrive (decoded incrementally, so
    multi-byte Korean stays whole)."""
    ids, _ = tokenizer.render_chat(messages, add_generation_prompt=True)
    room = model.cfg.max_seq_len - len(ids)
    if room <= 0:
        raise ValueError(f"the conversation is {len(ids)} tokens, the model's context is "
                         f"{model.cfg.max_seq_len}: /reset")
    max_new_tokens = min(max_new_tokens, room)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    shown, new = [""], []

    def on_token(step_tokens):
        if step_tokens[0] is None or step_tokens[0] == tokenizer.eot_id:
            return
        new.append(step_tokens[0])
        text = tokenizer.decode(new)
        if stream and not text.endswith("\ufffd"):  # wait for the rest of a split UTF-8 character
            stream(text[len(shown[0]):])
            shown[0] = text

    out = generate(model, [ids], max_new_tokens, temperature=temperature, top_p=top_p,
                   stop_ids=(tokenizer.eot_id,), generator=generator, pad_id=tokenizer.pad_id,
                   on_token=on_token)[0]
    text = tokenizer.decode([t for t in out if t != tokenizer.eot_id])
    if stream and len(text) > len(shown[0]):
        stream(text[len(shown[0]):])
    return text


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--ckpt", default="out/self_judge",
                    help="checkpoint folder (model.pt, config.json, tokenizer.model)")
    ap.add_argument("--prompt", default=None, help="one-shot: answer this and exit")
    ap.add_argument("--system", default=None, help="system prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    ckpt = find_checkpoint(args.ckpt) or args.ckpt  # a run folder: its newest complete save
    tok_path = os.path.join(ckpt, "tokenizer.model")
    if not os.path.exists(tok_path):
        raise SystemExit(f"{tok_path} not found: --ckpt must be a checkpoint folder written by a "
                         "minihcx phase")
    model, _ = load_model(ckpt, args.device)
    model.eval()
    tokenizer = Tokenizer(tok_path)
    top_p = args.top_p if args.temperature > 0 else None
    system = [{"role": "system", "content": args.system}] if args.system else []

    def write(piece):
        sys.stdout.write(piece)
        sys.stdout.flush()

    if args.prompt is not None:
        reply(model, tokenizer, system + [{"role": "user", "content": args.prompt}],
              args.max_new_tokens, args.temperature, top_p, args.seed, stream=write)
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
            text = reply(model, tokenizer, messages, args.max_new_tokens, args.temperature, top_p,
                         args.seed, stream=write)
        except ValueError as exc:
            print(f"\n({exc})")
            messages.pop()
            continue
        print()
        messages.append({"role": "assistant", "content": text})


if __name__ == "__main__":
    main()
