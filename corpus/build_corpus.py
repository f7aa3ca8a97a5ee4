"""Rebuild the shipped text files in corpus/ from their upstream packages (maintainers only).

The embedded default corpus (corpus.py: default_corpus) reads the .jsonl files this script writes,
plus two sources every Python install already has (the stdlib's own source as code, and pydoc_data,
the Python language reference, as English). Nothing here runs at training time; it records how the
shipped files were made, so anyone can check or redo it:

    python corpus/build_corpus.py            # needs apt-get (Debian) and pip; writes corpus/*.jsonl

Sources (see corpus/SOURCES.md for sizes and licences):
  ko_law       konlpy 0.6.0 wheel (PyPI): konlpy/data/corpus/kolaw (Constitution of the Republic of
               Korea, one document per chapter) and kobill (10 National Assembly bills). Statutes
               and bills are not protected works under the Korean Copyright Act, Art. 7.
  */gnome_help Debian gnome-user-docs 43.0: GNOME Help in Korean (ko) and its English original (C),
               one document per Mallard page. CC BY-SA 3.0. Korean pages are partly untranslated, so
               only paragraphs that are mostly Hangul are kept in the ko file.
  */debian_faq Debian debian-faq / debian-faq-ko 11.1: the Debian FAQ, one document per section.
               Verbatim-copying licence with permission for modified versions and translations.
"""

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from html.parser import HTMLParser

HERE = os.path.dirname(os.path.abspath(__file__))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
LATIN = re.compile(r"[A-Za-z]")


def hangul_share(text):
    """Hangul syllables / (Hangul + Latin letters): 1.0 for pure Korean, 0.0 for pure English."""
    h, lat = len(HANGUL.findall(text)), len(LATIN.findall(text))
    return h / max(1, h + lat)


def squash(text):
    return " ".join(text.split())


def write_jsonl(name, docs, lang, source):
    path = os.path.join(HERE, name)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        for text in docs:
            fh.write(
                json.dumps({"text": text, "lang": lang, "source": source}, ensure_ascii=False)
                + "\n"
            )
    os.replace(tmp, path)
    print(f"{name}: {len(docs)} documents, {os.path.getsize(path) / 1e3:.0f} kB")


# ----------------------------------------------------------------------------- Korean law (konlpy)
def konlpy_law(wheel):
    docs = []
    with zipfile.ZipFile(wheel) as zf:
        constitution = zf.read("konlpy/data/corpus/kolaw/constitution.txt").decode("utf-8")
        # one document per chapter ("제1장 총강"); the preamble goes with the title into the first
        parts = re.split(r"\n(?=\s*제\d+장\s)", constitution)
        docs += [p.strip() for p in parts if p.strip()]
        for name in sorted(n for n in zf.namelist() if n.startswith("konlpy/data/corpus/kobill/")):
            text = zf.read(name).decode("utf-8")
            docs.append(re.sub(r"\n{3,}", "\n\n", text).strip())
    return docs


# ----------------------------------------------------------------------------- GNOME Help (Mallard
# XML)
def mallard_page(path, korean):
    root = ET.parse(path).getroot()
    lines = []
    for el in root.iter():
        tag = el.tag.split("}")[-1]
        if tag not in ("title", "desc", "p"):
            continue
        text = squash("".join(el.itertext()))
        if text and (not korean or hangul_share(text) >= 0.5):
            lines.append(text)
    return "\n".join(lines)


def gnome_help(root, lang):
    docs = []
    for path in sorted(glob.glob(os.path.join(root, "usr/share/help", lang, "*", "*.page"))):
        text = mallard_page(path, korean=(lang == "ko"))
        if len(text) >= 200:
            docs.append(text)
    return docs


# ----------------------------------------------------------------------------- Debian FAQ (HTML)
class SectionText(HTMLParser):
    """Collects block-level text; starts a new document at every <h2>/<h3> (a FAQ section)."""

    BLOCKS = {"p", "h1", "h2", "h3", "h4", "li", "pre", "dt", "dd", "td", "title"}

    def __init__(self):
        super().__init__()
        self.docs, self.lines, self.buf, self.skip = [], [], [], 0

    def flush(self):
        text = squash("".join(self.buf))
        self.buf = []
        if text:
            self.lines.append(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self.skip += 1
        if tag in ("h2", "h3") and self.lines:
            self.flush()
            self.docs.append("\n".join(self.lines))
            self.lines = []
        if tag in self.BLOCKS:
            self.flush()

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head"):
            self.skip -= 1
        if tag in self.BLOCKS:
            self.flush()

    def handle_data(self, data):
        if not self.skip:
            self.buf.append(data)

    def close(self):
        super().close()
        self.flush()
        if self.lines:
            self.docs.append("\n".join(self.lines))
        return self.docs


def debian_faq(pattern, korean):
    docs = []
    for path in sorted(glob.glob(pattern)):
        if os.path.basename(path).startswith("index"):
            continue  # the table of contents
        parser = SectionText()
        with open(path, encoding="utf-8") as fh:
            parser.feed(fh.read())
        for doc in parser.close():
            if korean:
                doc = "\n".join(line for line in doc.split("\n") if hangul_share(line) >= 0.5)
            if len(doc) >= 200:
                docs.append(doc)
    return docs


def main():
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            ["apt-get", "download", "gnome-user-docs", "debian-faq", "debian-faq-ko"],
            cwd=tmp,
            check=True,
        )
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-d", tmp, "konlpy==0.6.0"],
            check=True,
        )
        for deb in glob.glob(os.path.join(tmp, "*.deb")):
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(tmp, "root")], check=True)
        root = os.path.join(tmp, "root")
        write_jsonl(
            "ko_law.jsonl",
            konlpy_law(glob.glob(os.path.join(tmp, "konlpy-*.whl"))[0]),
            "ko",
            "konlpy kolaw+kobill",
        )
        write_jsonl(
            "ko_gnome_help.jsonl", gnome_help(root, "ko"), "ko", "gnome-user-docs 43.0 (ko)"
        )
        write_jsonl("en_gnome_help.jsonl", gnome_help(root, "C"), "en", "gnome-user-docs 43.0 (C)")
        faq = os.path.join(root, "usr/share/doc/debian/FAQ")
        write_jsonl(
            "ko_debian_faq.jsonl",
            debian_faq(os.path.join(faq, "ko", "*.ko.html"), True),
            "ko",
            "debian-faq-ko 11.1",
        )
        write_jsonl(
            "en_debian_faq.jsonl",
            debian_faq(os.path.join(faq, "*.en.html"), False),
            "en",
            "debian-faq 11.1",
        )


if __name__ == "__main__":
    main()
