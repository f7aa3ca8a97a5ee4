"""corpus.py: the embedded default corpus, what `python tokenizer.py` trains on and `python data.py`
builds from when given no input: a small stand-in for HyperCLOVA X's pretraining data (HCX §2.1:
Korean, English and code). Offline, no download (corpus/SOURCES.md lists every source):

    ko_law, ko_gnome_help, ko_debian_faq   Korean text shipped in corpus/*.jsonl
    en_gnome_help, en_debian_faq           their English originals (partly parallel to the Korean)
    en_python_reference                    the Python language reference (stdlib pydoc_data)
    code_python_stdlib                     Python's own standard library source (--code-chars)
    tasks_ko, tasks_en                     the task world of tasks.py rendered as text (curated)

    default_sources(code_chars)   [Source]: one named, grouped set of documents per source
    default_corpus()              {"ko": [...], "en": [...], "code": [...]}: all of them by group
    hangul_share(text, of)        the share of Hangul in a text (how tasks_ko/_en are told apart,
                                  and the language guess of guess_lang, jsft.py, evaluate.py)
    as_corpus(texts_or_files)     documents and/or paths -> {lang: [docs]} (tokenizer.py's input);
                                  group_by_lang and guess_lang fill in a missing "lang"
    split_heldout(corpus, every)  every n-th document of each language held out (tokenizer.py's
                                  report); english_centric(corpus) its mostly-English baseline mix

Run:
  python corpus.py          # one line per source: group, documents, characters, where from
Rebuild the shipped files from their upstream packages with corpus/build_corpus.py.
"""

import argparse
import dataclasses
import functools
import itertools
import os
import re
import sysconfig
import warnings
import zlib

from readers import DataError, Source, read_documents, read_file, read_text_file


def hangul_share(text, of="letters"):
    """The share of Hangul syllables (가-힣) in `text`, 0 when it has none of the letters counted:
    of="letters": among all its letters (str.isalpha: every script, jamo and hanja included);
    of="hangul+latin": among its Hangul syllables and ASCII Latin letters only (other scripts are
    left out). Kept apart on purpose: each caller's 0.3 cut was set with its own denominator."""
    hangul = sum("\uac00" <= c <= "\ud7a3" for c in text)
    if of == "letters":
        return hangul / max(1, sum(c.isalpha() for c in text))
    if of == "hangul+latin":
        return hangul / max(1, hangul + len(re.findall(r"[A-Za-z]", text)))
    raise ValueError(f'hangul_share: of must be "letters" or "hangul+latin", got {of!r}')


CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
GROUPS = ("ko", "en", "code")


def stdlib_code(max_chars):
    """Python's own standard library source (PSF licence):
    a stable pseudo-random choice of modules."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__"}
    files = []
    for d, dirs, fs in os.walk(root):
        # prune: never walk into tests or installed packages
        dirs[:] = sorted(x for x in dirs if x not in skip)
        files += [os.path.join(d, f) for f in fs if f.endswith(".py")]
    # same order on every machine
    files.sort(key=lambda p: zlib.crc32(os.path.relpath(p, root).encode()))
    docs, total = [], 0
    for path in files:
        if total >= max_chars:
            break
        try:
            text = read_text_file(path)
        except DataError:
            continue
        if 1_000 <= len(text) <= 60_000:
            docs.append(text)
            total += len(text)
    return docs


def pydoc_topics():
    """The Python language reference as plain English text (stdlib pydoc_data, PSF licence)."""
    try:
        from pydoc_data.topics import topics
    except ImportError:
        warnings.warn(
            "pydoc_data is not installed with this Python: the default English corpus is smaller"
        )
        return []
    return [topics[k] for k in sorted(topics)]


def task_documents():
    """The bilingual instruction world of tasks.py rendered as text, when tasks.py exists."""
    try:
        import tasks
    except ImportError:
        return []
    return list(tasks.pretrain_documents(seed=0))


@functools.lru_cache(maxsize=4)
def _default_sources(code_chars):
    sources = []
    for name in ("ko_law", "ko_gnome_help", "ko_debian_faq", "en_gnome_help", "en_debian_faq"):
        path = os.path.join(CORPUS_DIR, name + ".jsonl")
        sources.append(
            Source(name, name[:2], [(t, None) for t, _ in read_file(path)], f"corpus/{name}.jsonl")
        )
    sources.append(
        Source(
            "en_python_reference", "en", [(t, None) for t in pydoc_topics()], "stdlib pydoc_data"
        )
    )
    sources.append(
        Source(
            "code_python_stdlib",
            "code",
            [(t, None) for t in stdlib_code(code_chars)],
            "stdlib *.py",
        )
    )
    task_docs = task_documents()
    for group in ("ko", "en"):
        docs = [
            (t, None)
            for t in task_docs
            if (hangul_share(t, of="hangul+latin") >= 0.3) == (group == "ko")
        ]
        if docs:
            sources.append(
                Source(f"tasks_{group}", group, docs, "tasks.pretrain_documents", curated=True)
            )
    return tuple(sources)


def default_sources(code_chars=1_000_000):
    return [dataclasses.replace(s, docs=list(s.docs)) for s in _default_sources(code_chars)]


def default_corpus():
    """{"ko": [...], "en": [...], "code": [...]}:
    the embedded default documents, offline, cached per process."""
    corpus = {g: [] for g in GROUPS}
    for s in default_sources():
        corpus.setdefault(s.group, []).extend(t for t, _ in s.docs)
    return corpus


# {lang: [docs]}: tokenizer.py's input, and the held-out split and baseline mix of its report
def guess_lang(text):
    """ko / code / en, for tokenizer.py's files without a "lang" field (report grouping only)."""
    if hangul_share(text) > 0.3:
        return "ko"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    codey = sum(
        ln.startswith((" ", "\t")) or ln.rstrip().endswith((":", "{", "}", ";", ")"))
        for ln in lines
    )
    return "code" if lines and codey / len(lines) > 0.4 else "en"


def group_by_lang(docs):
    """[(text, lang or None)] -> {lang: [texts]}; a missing lang is guessed."""
    corpus = {}
    for text, lang in docs:
        corpus.setdefault(lang or guess_lang(text), []).append(text)
    return corpus


def as_corpus(texts_or_files):
    """{lang: [docs]} | iterable of documents and/or paths -> {lang: [docs]}. A pathlib.Path is
    a path; so is a str without whitespace that exists or ends in .txt/.jsonl. Other str: text."""
    if isinstance(texts_or_files, dict):
        return {lang: list(docs) for lang, docs in texts_or_files.items()}
    if isinstance(texts_or_files, (str, os.PathLike)):
        texts_or_files = [texts_or_files]
    paths, docs = [], []
    for item in texts_or_files:
        if isinstance(item, os.PathLike) or (
            not re.search(r"\s", item)
            and (os.path.exists(item) or item.endswith((".txt", ".jsonl")))
        ):
            paths.append(item)
        else:
            docs.append((item, None))
    return group_by_lang(docs + (read_documents(paths) if paths else []))


def split_heldout(corpus, every=10):
    """Every n-th document of each language (the last one if fewer, none if only one) ->
    held out; the rest -> train."""
    train, heldout = {}, {}
    for lang, docs in corpus.items():
        held = set(range(every - 1, len(docs), every))
        if not held and len(docs) > 1:
            held = {len(docs) - 1}
        train[lang] = [d for k, d in enumerate(docs) if k not in held]
        heldout[lang] = [d for k, d in enumerate(docs) if k in held]
    return train, heldout


def english_centric(corpus, english_share=0.9):
    """Mostly-English training mix, like a LLaMA-style tokenizer: all English, and the other
    languages together capped at (1 - english_share) of the text, split evenly among them."""
    en = corpus.get("en", [])
    others = sorted(lang for lang in corpus if lang != "en")
    budget = sum(map(len, en)) * (1 - english_share) / english_share / max(len(others), 1)
    mix = {"en": list(en)}
    for lang in others:  # the longest prefix of its documents within the budget
        used = itertools.accumulate(map(len, corpus[lang]))
        mix[lang] = [d for d, total in zip(corpus[lang], used) if total <= budget]
    return mix


def main(argv=None):
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)  # --help
    for s in default_sources():
        chars = sum(len(t) for t, _ in s.docs)
        print(f"{s.name:22} {s.group:5} {len(s.docs):5} docs {chars:10,} chars  {s.origin}")


if __name__ == "__main__":
    main()
