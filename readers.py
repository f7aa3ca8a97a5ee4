"""readers.py: every input reader of the project, in one place, and the atomic writers.
Nothing here trains or tokenizes; the scripts import what they read with from here (DESIGN.md §4).

    read_text(path)               a whole UTF-8 file (BOM dropped)
    read_jsonl(path, parse)       the one JSONL reader: parse(record) per line, errors "file:line"
    read_documents(paths)         corpus files, folders, globs (tokenizer.py): .txt (blank-line
                                  separated) and .jsonl {"text", "lang"?} -> [(text, lang or None)]
    read_file(path), Source       one corpus file of a data.py --source; a named set of documents
    read_sources(specs)           data.py's --source NAME:GROUP:PATH specs -> [Source]
    read_messages_jsonl(path)     {"messages": [{"role", "content"}, ...]} per line (sft.py)
    read_hh_rlhf(path, side)      Anthropic HH-RLHF transcripts ("\\n\\nHuman: ...")
    hh_to_messages(text)          one HH transcript -> messages
    read_conversations(spec)      sft.py's --data: the task world or user files
    read_preferences(path)        preference pairs: UltraFeedback, HH-RLHF, generic (jsft.py)
    read_preference_files(spec)   jsft.py's --prefs: the task world's pairs or user files
    read_prompts(path)            conversations up to the turn to answer (self_judge.py, chat.py)
                                  fitting_prompts: those that leave room for a reply
    read_mc(path)                 multiple-choice records, MMLU and KMMLU layouts (evaluate.py)
    validate_templates(t)         judge templates {lang: {principle: {system, user, assistant}}}
                                  (jsft.py), template_fields: a template's text and placeholders
    atomic_write(path, content)   text, bytes or write_fn(path): temporary name, fsync, rename
    atomic_write_dir(dir, fn)     a whole folder: fn fills a temporary one, which replaces dir
    load_tokens(bin_path)         a token file of data.py (out/data/train.bin): np.memmap
    load_tensors(path)            a .pt file (checkpoints): tensors and plain data, never code
    opt, parse_config(cls, argv)  the command line: a config dataclass's fields are the flags;
                                  parse_weights: a NAME=NUMBER,.. flag (data.py's --mix)

Every bad record stops the read with `ValueError("file:line: what is wrong")`; with skip_bad=True
(--skip-bad) it is skipped, counted, and a one-line summary is printed at the end. This module
imports no other module of the project. It implements no paper section: it is the plumbing between
the data on disk and the scripts that do.

Use (a module, not a script):
    from readers import read_prompts
    contexts = read_prompts("out/tasks/eval_tasks.jsonl")   # [[{"role": "user", ...}], ...]
"""

import argparse
import dataclasses
import glob
import json
import os
import pickle
import random
import re
import shutil
import string
import sys
import typing
from dataclasses import dataclass, field

from tqdm import tqdm

HERE = os.path.dirname(os.path.abspath(__file__))


# -----------------------------------------------------------------------------------------------
# Writing: the one atomic file writer (checkpoints.py's checkpoints use write_file and fsync too)


def write_file(path, content):
    """content: text (written as UTF-8), bytes, or write_fn(path) for anything else (torch.save, a
    copy)."""
    if isinstance(content, str):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
    elif isinstance(content, bytes):
        with open(path, "wb") as fh:
            fh.write(content)
    else:
        content(path)


def fsync(path):
    """Flush a file, or a folder's entries (the renames into it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path):
    """The file's SHA-256 (hex), None if there is no such file: data.py records its tokenizer's, so
    a later reader can tell that the tokenizer it holds is the one that wrote the token ids."""
    import hashlib

    if not os.path.isfile(path):
        return None
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def atomic_write(path, content):
    """Write `content` (see write_file) to a temporary name, fsync it, then rename it over `path`:
    a crash leaves the old file or the new one, never half of one. The temporary name carries the
    process id, so two processes writing the same file never write into one temporary file."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        write_file(tmp, content)
        fsync(tmp)
        os.replace(tmp, path)
        fsync(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write_dir(out_dir, write_fn):
    """write_fn(folder) fills a temporary sibling folder, which then replaces out_dir (data.py's
    out/data): a failed run never leaves a half-written out_dir, and an old good one stays until the
    new one is complete."""
    out_dir = os.path.abspath(out_dir)
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        write_fn(tmp)
        old = f"{out_dir}.old-{os.getpid()}"
        if os.path.exists(out_dir):
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -----------------------------------------------------------------------------------------------
# Text and JSONL: the readers every other reader goes through


def read_text(path):
    """A whole UTF-8 text file (a leading BOM dropped). A byte that is not UTF-8 raises ValueError
    naming the file and line."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        bad = raw[e.start : e.start + 1]
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {e.start}: {bad!r}); convert the file to UTF-8"
        ) from None


def read_jsonl(path, parse, skip_bad=False, skipped=None):
    """[parse(record) for each JSON object line of `path`], the one JSONL reader of every script.
    A line that is not UTF-8, not JSON or not an object, or whose parse raises ValueError("what is
    wrong"), stops the read with ValueError("path:line: what is wrong"); with skip_bad it is left
    out and its message appended to `skipped`. Blank lines are ignored and a leading BOM dropped."""
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                try:
                    line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    bad = raw[e.start : e.start + 1]
                    raise ValueError(
                        f"not valid UTF-8 (byte {bad!r} at column {e.start + 1}); "
                        f"convert the file to UTF-8"
                    ) from None
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    what = e.msg.removesuffix(" at")  # json's "Invalid control character at"
                    raise ValueError(f"not valid JSON ({what} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                out.append(parse(record))
            except ValueError as e:
                if not skip_bad:
                    raise DataError(f"{path}:{n}: {e}") from None
                if skipped is not None:
                    skipped.append(f"{path}:{n}: {e}")
    return out


def read_jsonl_records(path, parse, skip_bad=False):
    """Calls parse(record) on each JSON line of `path` (read_jsonl: a line that is not
    UTF-8 or not JSON is an error too) and returns the concatenated lists it returns.

    parse raises ValueError("what is wrong") for a bad record: it becomes "path:line: what is wrong"
    and stops the read, or with skip_bad=True the record is skipped and counted. Blank lines are
    ignored. A record for which parse returns [] (say, a preference pair with nothing to prefer) is
    counted as "gave nothing", which is not an error."""
    skipped = []
    per_record = read_jsonl(path, parse, skip_bad, skipped)
    empty = sum(not items for items in per_record)
    notes = []
    if skipped:
        notes.append(f"skipped {len(skipped)} bad record(s), the first: {skipped[0]}")
    if empty:
        notes.append(f"{empty} record(s) gave nothing")
    if notes:
        print(f"{path}: " + "; ".join(notes), file=sys.stderr)
    return [item for items in per_record for item in items]


# -----------------------------------------------------------------------------------------------
# Corpus documents: .txt (documents separated by a blank line) or .jsonl ({"text", "lang"?}),
# directories and globs (DESIGN.md §4); tokenizer.py and data.py


GROUP_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a language group names files: val_<group>.bin


def text_record(record):
    """A corpus .jsonl record {"text": str, "lang"?: str} -> (text, lang or None)."""
    if not isinstance(record.get("text"), str):
        raise ValueError('expected an object with a "text" string')
    lang = record.get("lang")
    if lang is not None and not (isinstance(lang, str) and GROUP_NAME.fullmatch(lang)):
        raise ValueError(f'"lang" must be a group name (letters, digits, _ or -): {lang!r}')
    return record["text"], lang


def read_documents(paths, skip_bad=False):
    """-> list of (text, lang or None). Errors name the file (and line) and say what to fix; with
    skip_bad a bad .jsonl line is left out and counted on stderr."""
    files = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            found = sorted(
                glob.glob(os.path.join(p, "**", "*.txt"), recursive=True)
                + glob.glob(os.path.join(p, "**", "*.jsonl"), recursive=True)
            )
        elif glob.has_magic(p):
            found = sorted(glob.glob(p, recursive=True))
        else:
            found = [p]
        if not found:
            raise FileNotFoundError(f"{p}: no .txt or .jsonl files match")
        files += found
    docs, skipped = [], []
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        if path.endswith(".jsonl"):
            docs += read_jsonl(path, text_record, skip_bad, skipped)
        else:
            text = read_text(path).strip("\n")
            blocks = re.split(r"\n(?:[ \t]*\n)+", text)  # blank line(s) between
            docs += [(d, None) for d in blocks if d.strip()]
    if skipped:
        print(f"skipped {len(skipped)} bad record(s), the first: {skipped[0]}", file=sys.stderr)
    if not any(d.strip() for d, _ in docs):
        raise ValueError(f"empty corpus: no text in {', '.join(files)}")
    return docs


class DataError(ValueError):
    """Bad input; the message names the file (and line) and what to fix."""


def run_main(main):
    """A script's entry point: main() with bad input (DataError, a missing file or checkpoint)
    ending the run with its message, not a traceback."""
    try:
        main()
    except (DataError, FileNotFoundError) as e:
        sys.exit(f"{os.path.basename(sys.argv[0])}: {e}")


def read_text_file(path):
    try:
        return read_text(path)
    except ValueError as e:
        raise DataError(f"{e} or leave it out") from None


def read_file(path, skip_bad=False, skipped=None):
    """One file -> list of (text, lang or None). .jsonl: one {"text", "lang"?} per line;
    .txt/.md: documents separated by blank lines; anything else (code): the whole file is one
    document. A bad .jsonl line stops the read, or with skip_bad is left out,
    its "file:line: what" added to `skipped`."""
    ext = os.path.splitext(path)[1].lower()
    if ext != ".jsonl":
        text = read_text_file(path)
        if ext in (".txt", ".md"):
            return [(d, None) for d in re.split(r"\n\s*\n", text) if d.strip()]
        return [(text, None)] if text.strip() else []
    try:
        return read_jsonl(path, text_record, skip_bad, skipped)
    except ValueError as e:
        raise DataError(f"{e}; fix it or pass --skip-bad") from None


@dataclass
class Source:
    name: str
    group: str  # language group the mixture weights apply to: ko | en | code | any other name
    docs: list  # list of (text, lang or None); a record's lang overrides the group
    origin: str = ""
    skipped: list = field(default_factory=list)  # "file:line: what" of each skipped bad .jsonl line
    # written by this project (tasks.py): exempt from the length and repetition filters
    curated: bool = False


CODE_EXTS = {
    ".py",
    ".c",
    ".h",
    ".cc",
    ".cpp",
    ".hpp",
    ".js",
    ".ts",
    ".go",
    ".rs",
    ".java",
    ".sh",
    ".rb",
}
TEXT_EXTS = {".txt", ".md", ".jsonl"} | CODE_EXTS


def expand_paths(spec, where):
    """A file, a folder (every text/code file under it) or a glob -> sorted file list."""
    paths = []
    for pattern in [p for p in spec.split(",") if p]:
        pattern = os.path.expanduser(pattern)
        if os.path.isdir(pattern):
            found = sorted(
                os.path.join(d, f)
                for d, _, fs in os.walk(pattern)
                for f in fs
                if os.path.splitext(f)[1].lower() in TEXT_EXTS and not f.startswith(".")
            )
        elif any(c in pattern for c in "*?["):
            found = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            raise DataError(f"{pattern}: no such file or folder ({where})")
        if not found:
            raise DataError(f"{pattern}: matches no text file ({where})")
        paths += found
    return paths


def read_sources(specs, skip_bad=False):
    """data.py's --source NAME:GROUP:PATH[,PATH..] specs -> [Source]; files read by read_file."""
    sources = []
    for spec in specs:
        parts = spec.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise DataError(
                f"--source {spec!r}: expected NAME:GROUP:PATH[,PATH..], e.g. wiki:ko:data/kowiki/"
            )
        name, group, paths = parts
        if name in {s.name for s in sources}:
            raise DataError(f"--source {spec!r}: the name {name!r} is taken; give each its own")
        if not GROUP_NAME.fullmatch(group):
            raise DataError(f"--source {spec!r}: group {group!r}: use letters, digits, _ or -")
        files = expand_paths(paths, f"--source {name}")
        skipped = []
        docs = [
            d
            for f in tqdm(files, desc=f"read {name}", leave=False)
            for d in read_file(f, skip_bad, skipped)
        ]
        sources.append(Source(name, group, docs, paths, skipped))
    return sources


# -----------------------------------------------------------------------------------------------
# Chat conversations: the messages layout and HH-RLHF transcripts (sft.py)

ROLES = ("system", "user", "assistant")


def check_messages(messages, what="messages"):
    """A list of {"role": system|user|assistant, "content": str};
    raises ValueError naming the field."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f'"{what}" must be a non-empty list of {{"role", "content"}} objects')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(
                f'{what}[{i}]: "role" must be one of {", ".join(ROLES)}, got {m!r:.80}'
            )
        if not isinstance(m.get("content"), str):
            raise ValueError(f'{what}[{i}]: "content" must be a string')
        if m["role"] == "system" and i > 0:
            raise ValueError(f"{what}[{i}]: a system message may only come first")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_messages_jsonl(path, skip_bad=False) -> list[list[dict]]:
    """Chat conversations, one {"messages": [...]} per line; each must contain an assistant turn."""

    def parse(record):
        messages = check_messages(record.get("messages"))
        if not any(m["role"] == "assistant" for m in messages):
            raise ValueError("the conversation has no assistant turn to learn from")
        return [messages]

    return read_jsonl_records(path, parse, skip_bad)


HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def hh_to_messages(text) -> list[dict]:
    """'\\n\\nHuman: hi\\n\\nAssistant: hello'
    -> [{"role": "user", ...}, {"role": "assistant", ...}].

    Only a blank line followed by "Human:" or "Assistant:" starts a turn, so a reply may contain
    blank lines of its own. Contents are stripped. A transcript must start with a Human turn and
    alternate. A missing or empty final Assistant turn is allowed: the conversation then ends with
    the user turn (a prompt still to be answered); read_hh_rlhf returns it that way."""
    if not isinstance(text, str):
        raise ValueError(f"an HH transcript must be a string, got {type(text).__name__}")
    text = "\n\n" + text.lstrip() if text.lstrip().startswith(("Human:", "Assistant:")) else text
    parts = HH_TURN.split(text)  # [before, role, content, role, content, ...]
    if len(parts) < 3:
        raise ValueError('no "\\n\\nHuman:" / "\\n\\nAssistant:" turns found')
    if parts[0].strip():
        raise ValueError(f'text before the first "\\n\\nHuman:" turn: {parts[0].strip()!r:.60}')
    messages = []
    for i, (speaker, content) in enumerate(zip(parts[1::2], parts[2::2])):
        role, content = ("user" if speaker == "Human" else "assistant"), content.strip()
        if role != ("user", "assistant")[i % 2]:
            raise ValueError(
                f"turn {i + 1} is {speaker}, but turns must alternate starting with Human"
            )
        last = i == len(parts) // 2 - 1
        if not content and not (last and role == "assistant"):
            raise ValueError(f"turn {i + 1} ({speaker}) is empty")
        if content:
            messages.append({"role": role, "content": content})
    return messages


def read_hh_rlhf(path, side="chosen", skip_bad=False) -> list[list[dict]]:
    """The `side` ("chosen" or "rejected") transcript of each HH-RLHF record, as messages.
    A record whose final Assistant turn is missing or empty comes back ending with its user turn."""
    if side not in ("chosen", "rejected"):
        raise ValueError(f'read_hh_rlhf: side must be "chosen" or "rejected", got {side!r}')

    def parse(record):
        if not isinstance(record.get(side), str):
            raise ValueError(f'"{side}" must be a transcript string')
        return [hh_to_messages(record[side])]

    return read_jsonl_records(path, parse, skip_bad)


def read_conversations(spec, tasks_dir="out/tasks", skip_bad=False):
    """Conversations for --data: the task world's sft_train.jsonl, or user files (messages or
    HH-RLHF layout, told apart by the first record's keys)."""
    if spec == "tasks":
        path = os.path.join(tasks_dir, "sft_train.jsonl")
        if not os.path.exists(path):
            raise SystemExit(
                f"{path} not found: run `python tasks.py` first (or pass --data FILES)"
            )
        return read_messages_jsonl(path, skip_bad=skip_bad)
    conversations = []
    for path in spec.split(","):
        if not os.path.exists(path):
            raise SystemExit(f"--data: {path} not found")
        first = (read_jsonl(path, lambda record: record, skip_bad=True) or [{}])[0]  # errors: below
        reader = (
            read_hh_rlhf if "chosen" in first and "messages" not in first else read_messages_jsonl
        )
        conversations += reader(path, skip_bad=skip_bad)
    return conversations


# -----------------------------------------------------------------------------------------------
# Preference pairs and prompts (jsft.py, reward_model.py, self_judge.py)


@dataclass
class PreferencePair:
    context: list[dict]  # the messages before the judged reply, ending with a user turn
    chosen: str  # the better reply
    rejected: str  # the worse reply
    principle: str = "overall"  # what "better" is about
    chosen_rationale: str | None = None
    rejected_rationale: str | None = None


def ends_with_user(context, what="context"):
    if context[-1]["role"] != "user":
        raise ValueError(
            f"the {what} must end with a user turn to reply to, not {context[-1]['role']}"
        )
    return context


def pairs_from_hh(record):
    """HH layout: two transcripts that share every turn but the final Assistant reply; HH-RLHF's
    text, or message lists (TRL's conversational preference rows with an implicit prompt)."""

    def conversation(side):
        value = record[side]
        return check_messages(value, side) if isinstance(value, list) else hh_to_messages(value)

    chosen, rejected = conversation("chosen"), conversation("rejected")
    for side, msgs in (("chosen", chosen), ("rejected", rejected)):
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f'"{side}" has no final Assistant reply to compare')
    if chosen[:-1] != rejected[:-1]:
        raise ValueError('"chosen" and "rejected" differ before their final Assistant reply')
    if chosen[-1]["content"] == rejected[-1]["content"]:
        return []  # the same reply on both sides: nothing to prefer
    return [
        PreferencePair(ends_with_user(chosen[:-1]), chosen[-1]["content"], rejected[-1]["content"])
    ]


def reply_text(value, side):
    """A generic chosen/rejected: a string, or messages whose last turn is the assistant reply."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        last = check_messages(value, side)[-1]
        if last["role"] == "assistant":
            return last["content"]
    raise ValueError(f'"{side}" must be a string or messages ending with an assistant turn')


def pairs_from_generic(record):
    """Generic layout:
    {"messages": [...] or "prompt": str, "chosen", "rejected", "principle"?, rationales?}.
    Messages that end with an assistant turn (HuggingFaceH4/ultrafeedback_binarized keeps the
    chosen conversation there) give the turns before it."""
    if "messages" in record:
        context = check_messages(record["messages"])
        if context and context[-1]["role"] == "assistant":
            context = context[:-1]
    elif isinstance(record.get("prompt"), str):
        context = [{"role": "user", "content": record["prompt"]}]
    else:
        raise ValueError('"prompt" must be a string')
    chosen = reply_text(record["chosen"], "chosen")
    rejected = reply_text(record["rejected"], "rejected")
    if chosen == rejected:
        return []
    principle = record.get("principle", "overall")
    if not isinstance(principle, str):
        raise ValueError('"principle" must be a string')
    return [
        PreferencePair(
            ends_with_user(context),
            chosen,
            rejected,
            principle,
            record.get("chosen_rationale"),
            record.get("rejected_rationale"),
        )
    ]


def rating_of(note, where):
    """An UltraFeedback annotation -> (rating or None for "N/A", rationale). Real files hold the
    Rating as a string ("4"), sometimes "N/A"; some dumps wrap the annotation in a one-item list.
    Helpfulness and truthfulness also rate a "Type", explained by their "Rationale": the rating's
    own is then "Rationale For Rating"."""
    if isinstance(note, list) and len(note) == 1:
        note = note[0]
    if not isinstance(note, dict) or "Rating" not in note:
        raise ValueError(f'{where}: expected {{"Rating": ..., "Rationale": ...}}')
    rating, rationale = note["Rating"], note.get("Rationale For Rating") or note.get("Rationale")
    if isinstance(rating, str) and rating.strip().upper() in ("N/A", "NA", ""):
        return None, rationale
    try:
        return float(rating), rationale
    except (TypeError, ValueError):
        raise ValueError(f'{where}: "Rating" must be a number or "N/A", got {rating!r}') from None


def best_and_worse(ratings, rng):
    """ratings: {completion index: value}. Chosen: the highest rating, ties to the lower index.
    Rejected: one of the strictly lower-rated completions, drawn by the record's seeded rng
    (varied difficulty, as in the binarized UltraFeedback of Zephyr). None when all ratings tie."""
    if not ratings:
        return None
    best = min(ratings, key=lambda i: (-ratings[i], i))
    worse = sorted(i for i in ratings if ratings[i] < ratings[best])
    return (best, rng.choice(worse)) if worse else None


def pairs_from_ultrafeedback(record, rng, per_principle):
    """UltraFeedback layout: an instruction, completions[].response, completions[].annotations.
    per_principle=False: one pair by the mean over principles of each completion's numeric ratings
    (completions with none are left out), with the per-principle rationales joined.
    per_principle=True: one pair per principle whose ratings differ,
    with that principle's rationales."""
    if not isinstance(record["instruction"], str) or not isinstance(record["completions"], list):
        raise ValueError('"instruction" must be a string and "completions" a list')
    if not record["completions"]:
        raise ValueError('"completions" is empty: a record needs rated completions to compare')
    responses, notes = [], []
    for i, c in enumerate(record["completions"]):
        if not (
            isinstance(c, dict)
            and isinstance(c.get("response"), str)
            and isinstance(c.get("annotations"), dict)
        ):
            raise ValueError(
                f'completions[{i}] needs a "response" string and an "annotations" object'
            )
        responses.append(c["response"])
        notes.append(
            {
                p: rating_of(n, f"completions[{i}].annotations.{p}")
                for p, n in c["annotations"].items()
            }
        )
    context = [{"role": "user", "content": record["instruction"]}]
    if per_principle:
        pairs = []
        for p in sorted({p for n in notes for p in n}):
            ratings = {i: n[p][0] for i, n in enumerate(notes) if p in n and n[p][0] is not None}
            if pick := best_and_worse(ratings, rng):
                a, b = pick
                pairs.append(
                    PreferencePair(
                        list(context), responses[a], responses[b], p, notes[a][p][1], notes[b][p][1]
                    )
                )
        return pairs
    means = {}
    for i, n in enumerate(notes):
        rated = [value for value, _ in n.values() if value is not None]
        if rated:
            means[i] = sum(rated) / len(rated)
    if not (pick := best_and_worse(means, rng)):
        return []
    a, b = pick
    why = lambda i: " ".join(f"{p}: {r}" for p, (_, r) in sorted(notes[i].items()) if r) or None
    return [PreferencePair(context, responses[a], responses[b], "overall", why(a), why(b))]


def read_preferences(path, skip_bad=False, per_principle=False, seed=0) -> list[PreferencePair]:
    """Preference pairs, the layout detected per record:
    - UltraFeedback: "instruction" + "completions" (see pairs_from_ultrafeedback; per_principle
      applies here only, the other layouts carry one judgment per record),
    - HH-RLHF: "chosen"/"rejected" transcripts and no "messages"/"prompt",
    - generic: "messages" or "prompt" with "chosen"/"rejected" replies.
    A record with nothing to prefer (identical replies, all ratings tied) gives no pair and is
    counted. `seed` fixes which strictly worse UltraFeedback completion is drawn (seeded by the
    instruction text, so the same record always gives the same pair)."""

    def parse(record):
        if "instruction" in record and "completions" in record:
            rng = random.Random(f"{seed}/{record['instruction']}")
            return pairs_from_ultrafeedback(record, rng, per_principle)
        if "chosen" not in record or "rejected" not in record:
            raise ValueError(
                'unknown layout: expected "chosen"/"rejected" (HH-RLHF or generic) or '
                '"instruction"/"completions" (UltraFeedback)'
            )
        if "messages" in record or "prompt" in record:
            return pairs_from_generic(record)
        return pairs_from_hh(record)

    return read_jsonl_records(path, parse, skip_bad)


def read_preference_files(spec, tasks_dir="out/tasks", skip_bad=False, per_principle=False, seed=0):
    """Preference pairs for --prefs (jsft.py, self_judge.py --offline): 'tasks' (the task world's
    prefs_train.jsonl and ultrafeedback_train.jsonl) or comma-separated files, each read by
    read_preferences; every file must exist before any is read."""
    names = ("prefs_train.jsonl", "ultrafeedback_train.jsonl")
    paths = [os.path.join(tasks_dir, n) for n in names] if spec == "tasks" else spec.split(",")
    for path in paths:
        if not os.path.exists(path):
            raise SystemExit(f"{path} not found: run `python tasks.py` first, or check --prefs")
    pairs = []
    for path in paths:
        pairs += read_preferences(path, skip_bad=skip_bad, per_principle=per_principle, seed=seed)
    return pairs


def read_prompts(path, skip_bad=False) -> list[list[dict]]:
    """Conversations up to the turn to be answered: {"messages"} (a final assistant turn is
    dropped), {"prompt"} or {"instruction"} (one user turn), or an HH record (its "chosen"
    transcript up to the last Human turn). Each ends with a user turn."""

    def parse(record):
        if "messages" in record:
            messages = check_messages(record["messages"])
            if messages[-1]["role"] == "assistant":
                messages = messages[:-1]
        elif "prompt" in record or "instruction" in record:
            text = record.get("prompt", record.get("instruction"))
            if not isinstance(text, str) or not text.strip():
                raise ValueError('"prompt" / "instruction" must be a non-empty string')
            messages = [{"role": "user", "content": text}]
        elif "chosen" in record:
            messages = hh_to_messages(record["chosen"])
            while messages and messages[-1]["role"] == "assistant":
                messages = messages[:-1]
        else:
            raise ValueError(
                'unknown layout: expected "messages", "prompt", "instruction" or an HH "chosen"'
            )
        if not messages:
            raise ValueError("no user turn to answer")
        return [ends_with_user(messages, "prompt")]

    return read_jsonl_records(path, parse, skip_bad)


def fitting_prompts(path, tokenizer, max_new_tokens, max_len, what):
    """The prompts of `path` (read_prompts) that leave max_new_tokens of room in max_len."""
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: run `python tasks.py` first, or pass --{what} FILE")
    contexts = read_prompts(path)
    fits = [
        c for c in contexts if len(tokenizer.render_chat(c, True)[0]) + max_new_tokens <= max_len
    ]
    if len(fits) < len(contexts):
        print(
            f"{path}: left out {len(contexts) - len(fits)} prompt(s) "
            "longer than max_seq_len - max_new_tokens",
            file=sys.stderr,
        )
    if not fits:
        raise SystemExit(
            f"{path}: no prompt fits max_seq_len={max_len} with --max-new-tokens {max_new_tokens}"
        )
    return fits


# -----------------------------------------------------------------------------------------------
# Judge templates (jsft.JUDGE_TEMPLATES, or a caller's own): str.format text with placeholders


PLACEHOLDERS = ("context", "response_a", "response_b")


def template_fields(text, where):
    """[(literal text, placeholder name or None)] of a str.format template;
    ValueError naming `where`."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as e:
        raise ValueError(f"{where}: {e} (write a literal brace as {{{{ or }}}})") from None
    for _, name, spec, conversion in parsed:
        if name is not None and (spec or conversion):
            raise ValueError(
                f"{where}: write the placeholder as {{{name}}}, without a format spec or conversion"
            )
    return [(literal, name) for literal, name, _, _ in parsed]


def validate_templates(templates) -> None:
    """Checks {lang: {principle: {system, user, assistant}}} (or one language's {principle: ...}):
    each field a string; the user template holds {context}, {response_a}, {response_b} exactly once
    and no other placeholder; system and assistant hold none; the assistant prefix is non-empty and
    does not end in whitespace (the verdict token " A" / " B" brings its own space).
    Raises ValueError naming the language, principle and field."""
    if not isinstance(templates, dict) or not templates:
        raise ValueError(
            "judge templates: expected a non-empty {lang: {principle: {system, user, "
            "assistant}}} dict"
        )
    one_language = all(
        isinstance(t, dict) and isinstance(t.get("user"), str) for t in templates.values()
    )
    for lang, by_principle in ({"": templates} if one_language else templates).items():
        if not isinstance(by_principle, dict) or not by_principle:
            raise ValueError(
                f"judge templates[{lang!r}]: expected a non-empty "
                "{principle: {system, user, assistant}} dict"
            )
        for principle, t in by_principle.items():
            where = f"judge template {lang + '/' if lang else ''}{principle}"
            if not isinstance(t, dict):
                raise ValueError(
                    f"{where}: expected a {{system, user, assistant}} dict, got {type(t).__name__}"
                )
            for name in ("system", "user", "assistant"):
                if not isinstance(t.get(name), str):
                    raise ValueError(f"{where}: field {name!r} must be a string")
                found = [f for _, f in template_fields(t[name], f"{where}.{name}") if f is not None]
                if name == "user":
                    user_fields = found
                elif found:
                    raise ValueError(
                        f"{where}.{name}: placeholder {{{found[0]}}} belongs in the "
                        "user template only"
                    )
            for f in user_fields:
                if f not in PLACEHOLDERS:
                    raise ValueError(
                        f"{where}.user: unknown placeholder {{{f}}}; use only "
                        + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                    )
            for f in PLACEHOLDERS:
                if user_fields.count(f) != 1:
                    raise ValueError(
                        f"{where}.user: placeholder {{{f}}} must appear exactly once "
                        f"(found {user_fields.count(f)} times)"
                    )
            if not t["assistant"].strip() or t["assistant"] != t["assistant"].rstrip():
                raise ValueError(
                    f"{where}.assistant: the prefix must be non-empty and must not "
                    "end in whitespace "
                    "(the verdict token ' A' / ' B' brings its own space)"
                )


# -----------------------------------------------------------------------------------------------
# Multiple choice (evaluate.py)

LETTERS = "ABCDEFGHIJ"


def mc_record(record):
    """-> {"question", "choices", "answer" (0-based)}. Layouts: DESIGN.md §4 and MMLU {"question",
    "choices", "answer": 0-based index or letter}; KMMLU {"question", "A", "B", "C", "D", "answer":
    1-based index or letter}. A letter may be written "B" or "(B)". Raises ValueError naming the
    field."""
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError('"question" must be a non-empty string')
    if "choices" in record:
        choices, base = record["choices"], 0
    elif all(L in record for L in "ABCD"):
        choices, base = [record[L] for L in LETTERS if L in record], 1
    else:
        raise ValueError(
            'expected "choices": [...] (MMLU layout) or "A", "B", "C", "D" fields (KMMLU layout)'
        )
    if (
        not isinstance(choices, list)
        or not 2 <= len(choices) <= len(LETTERS)
        or not all(isinstance(c, (str, int, float)) and str(c).strip() for c in choices)
    ):
        raise ValueError(
            f"the choices must be 2 to {len(LETTERS)} non-empty strings, got {choices!r:.80}"
        )
    answer, letters = record.get("answer"), LETTERS[: len(choices)]
    letter = answer.strip().strip("()").upper() if isinstance(answer, str) else None
    if letter and len(letter) == 1 and letter in letters:
        index = letters.index(letter)
    elif (
        isinstance(answer, int)
        and not isinstance(answer, bool)
        and 0 <= answer - base < len(choices)
    ):
        index = answer - base
    else:
        raise ValueError(
            f'"answer" must be a {base}-based index below {len(choices) + base} or a '
            "letter "
            f"{letters[0]}-{letters[-1]}, got {answer!r}"
        )
    return {"question": question, "choices": [str(c) for c in choices], "answer": index}


def read_mc(path, skip_bad=False):
    """Multiple-choice records of a .jsonl file; a bad one stops the read as 'file:line: what is
    wrong'."""
    if not os.path.exists(path) and os.path.exists(os.path.join(HERE, path)):
        path = os.path.join(HERE, path)  # the shipped evals/ sets, from any working directory
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such multiple-choice file (--mc)")
    records = read_jsonl_records(path, lambda r: [mc_record(r)], skip_bad)
    if not records:
        raise ValueError(f"{path}: no multiple-choice records")
    return records


# -----------------------------------------------------------------------------------------------
# Token files (data.py's out/data/*.bin) and tensor files: checkpoints (checkpoints.py), PyTorch
# shards of a Hugging Face folder (convert.py)


def load_tokens(bin_path, dtype=None):
    """np.memmap of a token file; dtype from meta.json beside it, else uint16 (as nanoGPT)."""
    import numpy as np  # here, not at the top, as torch below

    if not os.path.exists(bin_path):
        raise FileNotFoundError(f"{bin_path}: no token file; run `python data.py` first")
    if dtype is None:
        meta_path = os.path.join(os.path.dirname(bin_path), "meta.json")
        dtype = np.uint16
        if os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as fh:
                dtype = np.dtype(json.load(fh).get("dtype", "uint16"))
    # np.memmap cannot map an empty file (e.g. a group with no val docs)
    if os.path.getsize(bin_path) == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(bin_path, dtype=dtype, mode="r")


def load_tensors(path, device="cpu", allow=()):
    """torch.load that can run no code: tensors and plain Python data only (weights_only=True),
    and the types in `allow`."""
    import torch  # here, not at the top: the text readers above need no torch

    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).strip().splitlines()[-1]
        raise ValueError(
            f"{path}: refused to load: it holds objects other than tensors and plain "
            f"data, which no minihcx checkpoint does (nothing in it was run). Written "
            f"by another tool or tampered with? ({why:.200})"
        ) from None


# -----------------------------------------------------------------------------------------------
# The command line: each script's flags are the fields of its config dataclass


def opt(default, help, choices=None):
    """A config field, its --help text and (optionally) the values it may take: parse_config makes
    each field a flag, and argparse refuses a value outside `choices` by name."""
    return field(default=default, metadata={"help": help, "choices": choices})


def parse_config(cls, argv=None, description=None):
    """Build an argparse parser from a config dataclass, parse argv, return an instance."""
    parser = argparse.ArgumentParser(
        description=description or (sys.modules[cls.__module__].__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_config_flags(parser, cls)
    args = parser.parse_args(argv)
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def add_config_flags(parser, cls):
    """One flag per field of a config dataclass: --field-name, with its type, default and help."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, kind = "--" + f.name.replace("_", "-"), hints[f.name]
        if typing.get_origin(kind) is typing.Union:  # Optional[X]
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind is bool:
            how = {"action": argparse.BooleanOptionalAction}
        elif kind is list:  # a repeated flag, e.g. data.py's --source
            how = {"action": "append"}
        else:
            how = {"type": kind}
        meta = field_meta(cls, f.name)
        how = {**how, "choices": meta["choices"]} if meta.get("choices") else how
        parser.add_argument(flag, default=f.default, help=meta["help"], **how)


def field_meta(cls, name):
    """A config field's opt() metadata ({"help", "choices"}); a subclass that only changes a
    default (JSFT's --steps) keeps what the class it overrides declared."""
    for base in cls.__mro__:
        f = getattr(base, "__dataclass_fields__", {}).get(name)
        if f is not None and "help" in f.metadata:
            return f.metadata
    raise TypeError(f"{cls.__name__}.{name}: no --help text; declare the field with opt()")


def parse_weights(spec, what):
    """A NAME=NUMBER,.. flag (data.py's --mix, --upsample) -> {name: float}, numbers >= 0."""
    out = {}
    for item in [x for x in spec.split(",") if x.strip()]:
        key, _, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not weight >= 0:  # a negative number or none (not an assert: `python -O` drops those)
            raise DataError(
                f"{what} {spec!r}: expected NAME=NUMBER,.. with numbers >= 0, got {item!r}"
            )
        out[key.strip()] = weight
    return out
