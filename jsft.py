"""jsft.py: judge-augmented SFT, JSFT (SELF-JUDGE, Lee et al., ACL 2024). The training part is to come.

For now this file holds the preference readers (DESIGN.md §4), which other scripts import:
    PreferencePair                       context messages + chosen / rejected replies (+ principle, rationales)
    read_preferences(path)               HH-RLHF, UltraFeedback or generic {"messages"|"prompt", "chosen", "rejected"}
    read_prompts(path)                   conversations up to the turn to answer, for self_judge.py
Every bad record stops the read with `ValueError("file:line: what is wrong")`; with skip_bad=True
it is skipped, counted, and a one-line summary is printed at the end.
"""
import random
from dataclasses import dataclass

from sft import check_messages, hh_to_messages, read_jsonl_records


# --- readers ---
@dataclass
class PreferencePair:
    context: list[dict]              # the messages before the judged reply, ending with a user turn
    chosen: str                      # the better reply
    rejected: str                    # the worse reply
    principle: str = "overall"       # what "better" is about
    chosen_rationale: str | None = None
    rejected_rationale: str | None = None


def ends_with_user(context, what="context"):
    if context[-1]["role"] != "user":
        raise ValueError(f"the {what} must end with a user turn to reply to, not {context[-1]['role']}")
    return context


def pairs_from_hh(record):
    """HH layout: two transcripts that share every turn but the final Assistant reply."""
    chosen, rejected = hh_to_messages(record["chosen"]), hh_to_messages(record["rejected"])
    for side, msgs in (("chosen", chosen), ("rejected", rejected)):
        if msgs[-1]["role"] != "assistant":
            raise ValueError(f'"{side}" has no final Assistant reply to compare')
    if chosen[:-1] != rejected[:-1]:
        raise ValueError('"chosen" and "rejected" differ before their final Assistant reply')
    if chosen[-1]["content"] == rejected[-1]["content"]:
        return []  # the same reply on both sides: nothing to prefer
    return [PreferencePair(ends_with_user(chosen[:-1]), chosen[-1]["content"], rejected[-1]["content"])]


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
    """Generic layout: {"messages": [...] or "prompt": str, "chosen", "rejected", "principle"?, rationales?}."""
    if "messages" in record:
        context = check_messages(record["messages"])
    elif isinstance(record.get("prompt"), str):
        context = [{"role": "user", "content": record["prompt"]}]
    else:
        raise ValueError('"prompt" must be a string')
    chosen, rejected = reply_text(record["chosen"], "chosen"), reply_text(record["rejected"], "rejected")
    if chosen == rejected:
        return []
    principle = record.get("principle", "overall")
    if not isinstance(principle, str):
        raise ValueError('"principle" must be a string')
    return [PreferencePair(ends_with_user(context), chosen, rejected, principle,
                           record.get("chosen_rationale"), record.get("rejected_rationale"))]


def rating_of(note, where):
    """An UltraFeedback annotation -> (rating or None for "N/A", rationale). Real files hold the
    Rating as a string ("4"), sometimes "N/A"; some dumps wrap the annotation in a one-item list."""
    if isinstance(note, list) and len(note) == 1:
        note = note[0]
    if not isinstance(note, dict) or "Rating" not in note:
        raise ValueError(f'{where}: expected {{"Rating": ..., "Rationale": ...}}')
    rating, rationale = note["Rating"], note.get("Rationale")
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
    best = min(ratings, key=lambda i: (-ratings[i], i))
    worse = sorted(i for i in ratings if ratings[i] < ratings[best])
    return (best, rng.choice(worse)) if worse else None


def pairs_from_ultrafeedback(record, rng, per_principle):
    """UltraFeedback layout: an instruction, completions[].response, completions[].annotations.
    per_principle=False: one pair by the mean over principles of each completion's numeric ratings
    (completions with none are left out), with the per-principle rationales joined.
    per_principle=True: one pair per principle whose ratings differ, with that principle's rationales."""
    if not isinstance(record["instruction"], str) or not isinstance(record["completions"], list):
        raise ValueError('"instruction" must be a string and "completions" a list')
    responses, notes = [], []
    for i, c in enumerate(record["completions"]):
        if not (isinstance(c, dict) and isinstance(c.get("response"), str) and isinstance(c.get("annotations"), dict)):
            raise ValueError(f'completions[{i}] needs a "response" string and an "annotations" object')
        responses.append(c["response"])
        notes.append({p: rating_of(n, f"completions[{i}].annotations.{p}") for p, n in c["annotations"].items()})
    context = [{"role": "user", "content": record["instruction"]}]
    if per_principle:
        pairs = []
        for p in sorted({p for n in notes for p in n}):
            ratings = {i: n[p][0] for i, n in enumerate(notes) if p in n and n[p][0] is not None}
            if pick := best_and_worse(ratings, rng):
                a, b = pick
                pairs.append(PreferencePair(list(context), responses[a], responses[b], p,
                                            notes[a][p][1], notes[b][p][1]))
        return pairs
    means = {}
    for i, n in enumerate(notes):
        rated = [value for value, _ in n.values() if value is not None]
        if rated:
            means[i] = sum(rated) / len(rated)
    if not (pick := best_and_worse(means, rng)):
        return []
    a, b = pick
    why = lambda i: " ".join(f"{p}: {r}" for p, (_, r) in sorted(notes[i].items()) if r) or None  # noqa: E731
    return [PreferencePair(context, responses[a], responses[b], "overall", why(a), why(b))]


def read_preferences(path, skip_bad=False, per_principle=False, seed=0) -> list[PreferencePair]:
    """Preference pairs, the layout detected per record:
    - UltraFeedback: "instruction" + "completions" (see pairs_from_ultrafeedback; per_principle
      applies here only, the other layouts carry one judgment per record),
    - HH-RLHF: "chosen"/"rejected" transcripts and no "messages"/"prompt",
    - generic: "messages" or "prompt" with "chosen"/"rejected" replies.
    A record with nothing to prefer (identical replies, all ratings tied) gives no pair and is counted.
    `seed` fixes which strictly worse UltraFeedback completion is drawn (seeded by the instruction
    text, so the same record always gives the same pair)."""
    def parse(record):
        if "instruction" in record and "completions" in record:
            rng = random.Random(f"{seed}/{record['instruction']}")
            return pairs_from_ultrafeedback(record, rng, per_principle)
        if "chosen" not in record or "rejected" not in record:
            raise ValueError('unknown layout: expected "chosen"/"rejected" (HH-RLHF or generic) or '
                             '"instruction"/"completions" (UltraFeedback)')
        if "messages" in record or "prompt" in record:
            return pairs_from_generic(record)
        return pairs_from_hh(record)
    return read_jsonl_records(path, parse, skip_bad)


def read_prompts(path, skip_bad=False) -> list[list[dict]]:
    """Conversations up to the turn to be answered: {"messages"} (a final assistant turn is dropped),
    {"prompt"} or {"instruction"} (one user turn), or an HH record (its "chosen" transcript up to the
    last Human turn). Each ends with a user turn."""
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
            raise ValueError('unknown layout: expected "messages", "prompt", "instruction" or an HH "chosen"')
        if not messages:
            raise ValueError("no user turn to answer")
        return [ends_with_user(messages, "prompt")]
    return read_jsonl_records(path, parse, skip_bad)
