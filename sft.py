"""sft.py: supervised fine-tuning on chat data (HyperCLOVA X §2.2.1). The training part is to come.

For now this file holds the chat readers (DESIGN.md §4), which other scripts import:
    read_messages_jsonl(path)   {"messages": [{"role", "content"}, ...]} per line
    read_hh_rlhf(path, side)    Anthropic HH-RLHF transcripts ("\\n\\nHuman: ...\\n\\nAssistant: ...")
    hh_to_messages(text)        one HH transcript -> messages
Every bad record stops the read with `ValueError("file:line: what is wrong")`; with skip_bad=True
it is skipped, counted, and a one-line summary is printed at the end.
"""
import json
import re
import sys

# --- readers ---
ROLES = ("system", "user", "assistant")


def read_jsonl_records(path, parse, skip_bad=False):
    """Calls parse(record) on each JSON line of `path` and returns the concatenated lists it returns.

    parse raises ValueError("what is wrong") for a bad record: it becomes "path:line: what is wrong"
    and stops the read, or with skip_bad=True the record is skipped and counted. Blank lines are
    ignored. A record for which parse returns [] (say, a preference pair with nothing to prefer) is
    counted as "gave nothing", which is not an error."""
    out, skipped, empty, first_error = [], 0, 0, None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                items = parse(record)
            except ValueError as e:
                message = f"{path}:{lineno}: {e}"
                if not skip_bad:
                    raise ValueError(message) from None
                skipped, first_error = skipped + 1, first_error or message
                continue
            empty += not items
            out.extend(items)
    if skipped or empty:
        notes = [f"skipped {skipped} bad record(s), the first: {first_error}"] if skipped else []
        notes += [f"{empty} record(s) gave nothing"] if empty else []
        print(f"{path}: " + "; ".join(notes), file=sys.stderr)
    return out


def check_messages(messages, what="messages"):
    """A list of {"role": system|user|assistant, "content": str}; raises ValueError naming the field."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f'"{what}" must be a non-empty list of {{"role", "content"}} objects')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise ValueError(f'{what}[{i}]: "role" must be one of {", ".join(ROLES)}, got {m!r:.80}')
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
    """'\\n\\nHuman: hi\\n\\nAssistant: hello' -> [{"role": "user", ...}, {"role": "assistant", ...}].

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
            raise ValueError(f"turn {i + 1} is {speaker}, but turns must alternate starting with Human")
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
