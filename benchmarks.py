"""
benchmarks.py - HCX §4's checks of a language model itself, one model at a time: validation loss
and bits per byte per language group, fill-in-the-middle on held-out documents, and multiple choice
read off the answer letter's probability (KMMLU / MMLU layouts, readers.read_mc). evaluate.py runs
them over every checkpoint (its lm, fim and mc sections) next to the alignment checks.

  lm_eval, lm_section          next-token loss over held-out token streams; bits per byte
  fim_eval, fim_section        greedy middles of held-out windows cut at thirds
  mc_prompt, mc_eval           HCX-style multiple choice (chat or plain text)
  continuation_logprobs        log p(continuation | prompt), one forward per prompt when it can

Use (a module, not a script):
  from benchmarks import lm_eval, token_byte_lengths
  lm_eval(model, token_stream, token_byte_lengths(tok))   # {"loss", "bpb", "tokens", "bytes"}
"""

import filecmp
import math
import os
import random

import numpy as np
import torch
import torch.nn.functional as F

import data
from corpus import hangul_share
from model import generate, last_position_logits, right_pad, sequence_logprobs
from readers import LETTERS, load_tokens

MC_INSTRUCTION = {
    "en": "Answer with the letter of the correct option.",
    "ko": "정답의 기호를 고르세요.",
}
# the assistant's words; the next token is the letter
MC_ANSWER_PREFIX = {"en": "Answer:", "ko": "정답:"}


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None  # None: nothing to average (null in report.json)


# ------------------------------------------------------------------ lm: loss and bits per byte
def bits_per_byte(total_nats, n_bytes):
    """= loss_nats * tokens / (bytes * ln 2). Per byte, not per token, so tokenizers compare
    fairly."""
    return total_nats / (n_bytes * math.log(2))


def token_byte_lengths(tok):
    """(V,) UTF-8 bytes each id stands for: 1 for a byte-fallback piece, 0 for control ids (eos),
    else its text."""
    sp, out = tok.sp, np.zeros(tok.vocab_size, dtype=np.int64)
    for i in range(tok.vocab_size):
        if sp.is_byte(i):
            out[i] = 1
        elif not (sp.is_control(i) or sp.is_unknown(i)):
            out[i] = len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    return out


@torch.no_grad()
def lm_eval(model, stream, byte_lengths, seq_len=256, max_tokens=0, batch_size=16):
    """Next-token loss over a token stream cut into consecutive windows, so every token after the
    first is predicted once. Bytes are those of the predicted tokens (an eos costs bits but has no
    bytes).
    -> {"loss": nats per token, "bpb", "tokens", "bytes"}."""
    stream = np.asarray(stream[: max_tokens + 1] if max_tokens else stream, dtype=np.int64)
    if len(stream) < 2:
        raise ValueError("lm_eval: the token stream needs at least 2 tokens")
    seq_len = min(seq_len, model.cfg.max_seq_len)
    starts = list(range(0, len(stream) - 1, seq_len))
    device = model.lm_head.weight.device
    nats, n_tokens, n_bytes = 0.0, 0, 0
    for k in range(0, len(starts), batch_size):
        # the last may be shorter
        rows = [stream[s : s + seq_len + 1] for s in starts[k : k + batch_size]]
        x = right_pad([r[:-1] for r in rows], 0)  # (B, T)
        y = right_pad([r[1:] for r in rows], -100)  # (B, T), -100 = no target
        logits, _ = model(x.to(device))  # (B, T, V)
        nats += F.cross_entropy(
            logits.flatten(0, 1).float(), y.flatten().to(device), ignore_index=-100, reduction="sum"
        ).item()
        targets = y[y != -100].numpy()
        n_tokens, n_bytes = n_tokens + len(targets), n_bytes + int(byte_lengths[targets].sum())
    return {
        "loss": nats / n_tokens,
        "bpb": bits_per_byte(nats, n_bytes),
        "tokens": n_tokens,
        "bytes": n_bytes,
    }


def heldout_documents(data_dir, group, data_tok):
    """The validation documents of a language group as text: val_<group>.bin split at eos,
    decoded."""
    ids = load_tokens(os.path.join(data_dir, f"val_{group}.bin"))
    ends = np.flatnonzero(ids == data_tok.eos_id)
    return [data_tok.decode(ids[s:e]) for s, e in zip(np.r_[0, ends[:-1] + 1], ends)]


def val_stream(data_dir, group, tok, data_tok):
    """val_<group>.bin as it is when the checkpoint shares data.py's tokenizer, else its documents
    re-encoded."""
    if filecmp.cmp(tok.model_path, data_tok.model_path, shallow=False):
        return load_tokens(os.path.join(data_dir, f"val_{group}.bin"))
    return np.array(
        [
            i
            for d in heldout_documents(data_dir, group, data_tok)
            for i in tok.encode(d) + [tok.eos_id]
        ]
    )


def lm_section(model, tok, data_tok, data_dir, groups, seq_len, max_tokens, batch_size):
    """Loss and bits per byte per language group (those with validation text), and over all of
    them."""
    lengths = token_byte_lengths(tok)
    streams = {g: val_stream(data_dir, g, tok, data_tok) for g in groups}
    out = {
        g: lm_eval(model, s, lengths, seq_len, max_tokens, batch_size)
        for g, s in streams.items()
        if len(s) > 1
    }
    nats = sum(r["loss"] * r["tokens"] for r in out.values())
    tokens, n_bytes = sum(r["tokens"] for r in out.values()), sum(r["bytes"] for r in out.values())
    out["all"] = {
        "loss": nats / tokens,
        "bpb": bits_per_byte(nats, n_bytes),
        "tokens": tokens,
        "bytes": n_bytes,
    }
    return out


# ------------------------------------------------------------------ fim
def fim_examples(docs, tok, n, max_chars, seed=0):
    """Held-out documents -> [(prompt ids, middle text)]: windows of whole lines (at most
    max_chars), n of them drawn at random, each cut at thirds (data.fim_split) and laid out PSM
    exactly as data.fim_ids writes training documents, up to <fim_middle>. A leading eos stands for
    the end of the document packed before it."""
    windows = []
    for doc in docs:
        current = ""
        for line in doc.splitlines(keepends=True):
            if current and len(current) + len(line) > max_chars:
                windows.append(current)
                current = ""
            current += line
        windows.append(current)
    # no near-empty tails
    windows = [w[:max_chars] for w in windows if len(w.strip()) >= max_chars // 4]
    random.Random(seed).shuffle(windows)
    out = []
    for w in windows[:n]:
        prefix, middle, suffix = data.fim_split(w, None, "thirds")
        out.append(([tok.eos_id] + data.fim_ids(prefix, "", suffix, tok), middle))
    return out


def prefix_match(generated, middle):
    """Share of the middle's leading characters reproduced exactly (1.0: the whole middle, maybe
    more)."""
    return len(os.path.commonprefix([generated, middle])) / max(1, len(middle))


@torch.no_grad()
def fim_eval(model, tok, examples, max_new_tokens=48, batch_size=32):
    """Greedy middles, stopped at eos (training puts one after the middle). exact: the middle and
    then eos.
    -> {"exact", "prefix", "n"}."""
    exact, prefix = [], []
    for k in range(0, len(examples), batch_size):
        chunk = examples[k : k + batch_size]
        room = model.cfg.max_seq_len - max(len(p) for p, _ in chunk)
        if room < 1:
            raise ValueError(
                f"fim: a prompt fills the model's context ({model.cfg.max_seq_len}); "
                "lower --fim-chars"
            )
        new = generate(
            model,
            [p for p, _ in chunk],
            min(max_new_tokens, room),
            temperature=0,
            stop_ids=(tok.eos_id,),
            pad_id=tok.pad_id,
        )
        for ids, (_, middle) in zip(new, chunk):
            text = tok.decode(ids)  # eos is a control id: it decodes to nothing
            exact.append(float(text == middle and ids[-1:] == [tok.eos_id]))
            prefix.append(prefix_match(text, middle))
    return {"exact": mean(exact), "prefix": mean(prefix), "n": len(examples)}


def fim_section(
    model, tok, data_tok, data_dir, groups, n, max_chars, max_new_tokens, batch_size, seed=0
):
    """fim_eval on n held-out windows (max_chars each) of every language group."""
    return {
        g: fim_eval(
            model,
            tok,
            fim_examples(heldout_documents(data_dir, g, data_tok), tok, n, max_chars, seed),
            max_new_tokens,
            batch_size,
        )
        for g in groups
    }


# ------------------------------------------------------------------ multiple choice


def mc_prompt(tok, question, choices, chat=True):
    """HCX style: the question and its lettered options as a user turn, then the assistant's
    "Answer:", whose next token is the answer letter. chat=False (a base model, which never saw the
    chat tokens): the same text as a plain document after an eos, "...\nAnswer:" on its own line."""
    lang = "ko" if hangul_share(question, of="hangul+latin") >= 0.3 else "en"
    options = "\n".join(f"{L}. {c}" for L, c in zip(LETTERS, choices))
    body = f"{question.strip()}\n{options}\n{MC_INSTRUCTION[lang]}"
    if not chat:
        return [tok.eos_id] + tok.encode(f"{body}\n{MC_ANSWER_PREFIX[lang]}")
    messages = [{"role": "user", "content": body}]
    return tok.render_chat(messages, add_generation_prompt=True)[0] + tok.encode(
        MC_ANSWER_PREFIX[lang]
    )


@torch.no_grad()
def continuation_logprobs(model, prompts, continuations, pad_id, batch_size=32):
    """log p(continuation | prompt) for each prompt and each of its continuations (lists of ids).
    When every continuation is one token (" A" ... " D" usually are) it takes one forward pass per
    prompt, read off the next-token distribution at the prompt's last position; otherwise one row
    per continuation, its tokens' log-probabilities summed by sequence_logprobs. Both compute the
    same number."""
    device = model.lm_head.weight.device
    if all(len(c) == 1 for cs in continuations for c in cs):
        out = []
        for k in range(0, len(prompts), batch_size):
            chunk = prompts[k : k + batch_size]
            logp = last_position_logits(model, chunk, pad_id).float().log_softmax(-1)  # (B, V)
            out += [
                [logp[b, c[0]].item() for c in cs]
                for b, cs in enumerate(continuations[k : k + batch_size])
            ]
        return out
    rows = [(p + c, len(p)) for p, cs in zip(prompts, continuations) for c in cs]
    flat = []
    for k in range(0, len(rows), batch_size):
        chunk = rows[k : k + batch_size]
        x = right_pad([ids for ids, _ in chunk], pad_id)  # (B, T)
        mask = torch.zeros_like(x)
        for b, (ids, start) in enumerate(chunk):
            mask[b, start : len(ids)] = 1  # the continuation's tokens
        flat += sequence_logprobs(model, x.to(device), mask.to(device))[0].tolist()
    out, k = [], 0
    for cs in continuations:
        out.append(flat[k : k + len(cs)])
        k += len(cs)
    return out


def mc_eval(model, tok, records, batch_size=32, chat=True):
    """Accuracy (the most probable letter), mean probability of the right letter (normalized over
    the letters), chance level. A prompt longer than the model's context loses its start (counted in
    "truncated")."""
    # " C" may be two tokens ("▁", "C") in a small vocabulary
    letters = [tok.encode(" " + L) for L in LETTERS]
    prompts, conts, truncated = [], [], 0
    for r in records:
        cs = letters[: len(r["choices"])]
        room = model.cfg.max_seq_len - max(map(len, cs))
        p = mc_prompt(tok, r["question"], r["choices"], chat)
        truncated += len(p) > room
        prompts.append(p[-room:])
        conts.append(cs)
    right, p_right = [], []
    for r, lp in zip(records, continuation_logprobs(model, prompts, conts, tok.pad_id, batch_size)):
        probs = torch.tensor(lp).softmax(0)
        right.append(float(int(probs.argmax()) == r["answer"]))
        p_right.append(float(probs[r["answer"]]))
    return {
        "accuracy": mean(right),
        "p_correct": mean(p_right),
        "chance": mean(1 / len(r["choices"]) for r in records),
        "n": len(records),
        "truncated": truncated,
        "format": "chat" if chat else "plain text",
        "letter_tokens": "one token each"
        if all(len(c) == 1 for cs in conts for c in cs)
        else "multi-token",
    }
