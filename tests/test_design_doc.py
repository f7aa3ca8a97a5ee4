"""DESIGN.md against the code: the file exists in the repository, every "DESIGN.md §N" citation
names one of its sections, nothing tracked names a file outside the repository, and the parts of
the contract a test can read (special-token ids, the chat rendering, the judge prompts) are what
tokenizer.py and jsft.py do."""

import os
import re
import subprocess

import pytest

from jsft import JUDGE_TEMPLATES, context_text, judge_prompt
from tokenizer import SEGMENTATION_MARKERS, SPECIAL_PIECES, VERDICT_PIECES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "DESIGN.md")
CITATION = re.compile(r"DESIGN\.md\s+§\s*(\d+)")  # may wrap: "(DESIGN.md\n§4)"
# a path out of the repository: the shared folder beside it, or an absolute path under /work
OUTSIDE = re.compile(r"\.\./shared|(?<![\w.~/-])/(?:work)/")


def design_text():
    with open(DESIGN, encoding="utf-8") as fh:
        return fh.read()


def sections(text):
    """{number: body} of the "## N. Title" sections."""
    parts = re.split(r"^## (\d+)\. .*$", text, flags=re.M)
    return {int(n): body for n, body in zip(parts[1::2], parts[2::2])}


def fenced_blocks(body):
    """The contents of the ``` blocks of a section, in order."""
    return re.findall(r"^```[a-z]*\n(.*?)^```$", body, flags=re.M | re.S)


def tracked_files(*patterns):
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", *patterns], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [f for f in out.decode().split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8", errors="replace") as fh:
        return fh.read()


def test_design_doc_is_in_the_repository():
    assert os.path.isfile(DESIGN)
    assert "DESIGN.md" in tracked_files("DESIGN.md")
    assert sorted(sections(design_text())) == [1, 2, 3, 4]


def test_every_citation_names_a_section_that_exists():
    numbers = set(sections(design_text()))
    files = tracked_files("*.py", "*.md")
    cites = [(f, int(n)) for f in files for n in CITATION.findall(read(f))]
    assert len(cites) >= 15, cites  # the code does cite it: a broken regex must not pass silently
    bad = [f"{f}: DESIGN.md §{n}" for f, n in cites if n not in numbers]
    assert not bad, f"citations of sections DESIGN.md does not have: {bad}"


def test_nothing_tracked_names_a_file_outside_the_repository():
    hits = [
        f"{f}:{text[: m.start()].count(chr(10)) + 1}: {m.group()}"
        for f in tracked_files()
        for text in [read(f)]
        for m in OUTSIDE.finditer(text)
    ]
    assert not hits, hits


def test_special_token_table_is_the_tokenizers():
    block = fenced_blocks(sections(design_text())[2])[0]
    rows = [re.match(r"(\d+|-)\s+(\w+)\s+(\S+)(.*)", line) for line in block.splitlines()[1:]]
    assert all(rows), block
    fixed = {int(r[1]): (r[2], r[3], r[4]) for r in rows if r[1] != "-"}
    # ids 0..10: SPECIAL_PIECES in order (Tokenizer reads id i as its i-th entry)
    assert {
        i: (name, piece) for i, (name, piece, _) in fixed.items() if i < len(SPECIAL_PIECES)
    } == dict(enumerate(SPECIAL_PIECES.items()))
    # the id after them: the segmentation marker, either value
    assert sorted(fixed) == list(range(len(SPECIAL_PIECES) + 1))
    _, piece, rest = fixed[len(SPECIAL_PIECES)]
    assert {piece, *re.findall(r"<\|seg:[^|]*\|>", rest)} == set(SEGMENTATION_MARKERS.values())
    assert {r[2]: r[3] for r in rows if r[1] == "-"} == VERDICT_PIECES


def test_special_ids_of_a_trained_tokenizer(small_tokenizer):
    ids = small_tokenizer.special_ids()
    assert [ids[name] for name in SPECIAL_PIECES] == list(range(len(SPECIAL_PIECES)))
    assert small_tokenizer.sp.id_to_piece(len(SPECIAL_PIECES)) == SEGMENTATION_MARKERS[True]


def test_chat_rendering_example(small_tokenizer):
    body = sections(design_text())[2]
    example = fenced_blocks(body)[1].rstrip("\n")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    ids, mask = small_tokenizer.render_chat(messages)
    assert small_tokenizer.decode(ids, show_special=True) == example
    learned = small_tokenizer.decode([i for i, m in zip(ids, mask) if m], show_special=True)
    assert f"exactly on `{learned}`" in " ".join(body.split())  # the doc names the masked tokens


@pytest.mark.parametrize("lang, question", [("en", "What is 2 plus 3?"), ("ko", "2 더하기 3은?")])
def test_judge_prompt_is_the_templates(small_tokenizer, lang, question):
    blocks = fenced_blocks(sections(design_text())[3])
    shown = blocks[("en", "ko").index(lang)].rstrip("\n")
    t = JUDGE_TEMPLATES[lang]["overall"]
    assert shown == (
        f"<s><|system|>{t['system']}<|endofturn|><|user|>{t['user']}"
        f"<|endofturn|><|assistant|>{t['assistant']}"
    )
    # and what jsft.judge_prompt builds, token by token, with the placeholders as responses
    context = [{"role": "user", "content": question}]
    ids = judge_prompt(small_tokenizer, context, "{response_a}", "{response_b}", "overall", lang)
    assert small_tokenizer.decode(ids, show_special=True) == shown.replace(
        "{context}", context_text(context, lang)
    )
