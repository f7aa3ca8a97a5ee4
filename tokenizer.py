"""tokenizer.py: a bilingual (Korean/English + code), morpheme-aware BPE tokenizer with unforgeable
special tokens, and the chat renderer. HyperCLOVA X technical report §2.1 (tokenizer, Table 1) and
§2.2.1 (chat format); the judge verdict tokens of SELF-JUDGE (Lee et al., ACL 2024) §3.

What a reader learns here:
  1. Korean is agglutinative: a word is a stem plus particles and endings (인간|은, 보호|하여야).
     We cut every Hangul word at those morpheme boundaries (segment_korean, a small rule set)
     before BPE sees it, at training *and* at encoding time, so no merge ever crosses a boundary
     and stems become reusable pieces. The flag is switchable, so its effect is measurable: at a
     4k vocabulary plain BPE spends a few % fewer tokens on Korean by memorizing whole word
     forms (인간은), and then 31% of the morpheme boundaries fall inside one of its tokens.
  2. sentencepiece BPE with byte_fallback: any UTF-8 string round-trips, decode(encode(x)) == x.
     No dummy prefix, no whitespace folding, identity normalization: encode(a + b) behaves like
     encode(a) + encode(b) at word boundaries, which the judge prompt relies on.
  3. Special tokens are control symbols: text never encodes to them, so a user typing
     "<|assistant|>" gets plain pieces, not a role switch. Code inserts them by id.
  4. The efficiency report of HCX Table 1: mean tokens per held-out document for Korean, English
     and code, for (a) this tokenizer, (b) the same without morpheme awareness and (c) an
     English-centric tokenizer of the same vocabulary size. With the report, (a) itself trains
     without the held-out documents (`--no-report`: on every document, another tokenizer).

Run:
  python tokenizer.py                     # default corpus (corpus.py) -> out/tokenizer
  python tokenizer.py train --input 'corpus/*.jsonl' --vocab-size 8192 --out out/tok
  python tokenizer.py encode "모든 인간은 태어날 때부터 자유롭다."   # show the pieces
"""

import argparse
import dataclasses
import io
import itertools
import json
import os
import random
import re
import struct
import sys
from dataclasses import dataclass

import sentencepiece as spm
from tqdm import tqdm

from corpus import as_corpus, default_corpus, english_centric, group_by_lang, split_heldout
from readers import ROLES, add_config_flags, atomic_write, opt, read_documents
from report import tokenizer_table

# -------- special tokens (DESIGN.md §2). Fixed ids: the first pieces of every model trained here

SPECIAL_PIECES = {  # attribute name -> piece; position in this dict == id
    "pad": "<pad>",
    "unk": "<unk>",
    "bos": "<s>",
    "eos": "</s>",
    "system": "<|system|>",
    "user": "<|user|>",
    "assistant": "<|assistant|>",
    "eot": "<|endofturn|>",
    "fim_prefix": "<|fim_prefix|>",
    "fim_middle": "<|fim_middle|>",
    "fim_suffix": "<|fim_suffix|>",
}
# One more control symbol records how the model segments text, so a bare tokenizer.model (without
# meta.json, as in a checkpoint) encodes exactly as trained. Bump it when the rules below change.
SEGMENTATION_MARKERS = {True: "<|seg:morpheme-v1|>", False: "<|seg:none|>"}
VERDICT_PIECES = {"verdict_a": "\u2581A", "verdict_b": "\u2581B"}  # " A" and " B" (SELF-JUDGE)
SPACE_SYMBOL = "\u2581"  # sentencepiece writes a space as "▁"

# --- Korean morpheme segmentation: a rule set for the common particles (조사) and endings (어미)
# A Hangul word is cut before the longest known suffix, at most twice (stem | particle | ending).
# A stem keeps at least one syllable, two before a one-syllable suffix (국가 "nation" stays
# whole, 국가가 becomes 국가|가) and before a 하다/되다 form (위하여 is one verb, 보호|하여 is
# noun + 하다). Cuts fall between whole syllables; jamo are never split. Checked against the Kiwi
# morphological analyzer (kiwipiepy) on held-out default Korean text: 89% of these cuts are Kiwi
# boundaries, 95% counting fused endings that Kiwi cuts inside a syllable (켭|니다 = 켜 + ㅂ니다).

# The suffix tables, shortest first (VERBALIZERS: by verb); PARTICLES ends with the copula 이다.
PARTICLES = tuple(
    """
    이 가 을 를 은 는 의 에 도 만 와 과 로 께 들 랑
    으로 에서 에게 한테 께서 까지 부터 보다 처럼 마다 조차 마저 이나 라도 밖에 이랑
    로서 로써 라는 라고 이란 에는 에도 에만
    으로서 으로써 로부터 에게서 한테서 에서는 에서도 에서만 에게는 으로는 으로도 까지는
    부터는 이라는 이라고 이라도 으로부터 에서부터
    이다 이고 이며 이면 입니다 이었다 였다
    """.split()
)
ENDINGS = tuple(
    """
    다 고 며 면 게 음 던
    니다 니까 도록 면서 지만 는지 은지 는데 은데 다면 어서 아서 어야 아야 었다 았다 겠다
    는다 으며 으면 으나 거나
    습니다 습니까 었으며 았으며 었는데 는다면
    """.split()
)
# 하다/되다/시키다 make verbs of (mostly Sino-Korean) nouns: 보호|하여야, 개정|한다
VERBALIZERS = tuple(
    """
    한 할 함 해 된 될 됨
    하다 하고 하며 하면 하여 하는 한다 하지 하게 하기 하도록 하거나 하여야 하였다 하였으며
    했다 합니다 한다면
    되다 되고 되며 되면 되어 되는 된다 되지 되기 되도록 되었다 된다면
    시키다 시키는 시킨다
    """.split()
)
_SUFFIXES, _VERBALIZERS = frozenset(PARTICLES + ENDINGS + VERBALIZERS), frozenset(VERBALIZERS)
_MAX_SUFFIX = max(map(len, _SUFFIXES))
_HANGUL_WORD = re.compile("[\uac00-\ud7a3]+")  # runs of complete Hangul syllables


def _suffix_cut(word):
    """Index where the longest known suffix of `word` starts, or None."""
    for n in range(min(_MAX_SUFFIX, len(word) - 1), 0, -1):
        suffix = word[-n:]
        min_stem = 2 if n == 1 or suffix in _VERBALIZERS else 1
        if suffix in _SUFFIXES and len(word) - n >= min_stem:
            return len(word) - n
    return None


def segment_korean(text):
    """Split text at Korean morpheme boundaries. Lossless: "".join(segment_korean(t)) == t.
    Non-Hangul text is left in one piece: only cuts inside Hangul words are made."""
    cuts = []
    for m in _HANGUL_WORD.finditer(text):
        word, start = m.group(), m.start()
        for _ in range(2):  # stem | particle | ending
            cut = _suffix_cut(word)
            if cut is None:
                break
            cuts.append(start + cut)
            word = word[:cut]
    bounds = [0] + sorted(cuts) + [len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def _chunks(text, morpheme_aware):
    """The units sentencepiece sees (merges never cross them); a literal "▁" splits them too."""
    out = []
    for k, part in enumerate(text.split(SPACE_SYMBOL)):
        if k:
            out.append(None)  # None = a literal "▁" here, encoded as raw bytes by Tokenizer.encode
        out += segment_korean(part) if morpheme_aware else ([part] if part else [])
    return out


# --------------------------------------------------------------------------------- the tokenizer


class Tokenizer:
    """A trained tokenizer.model (+ optional meta.json beside it). See the module docstring."""

    def __init__(self, model_path):
        if not os.path.isfile(model_path):
            raise FileNotFoundError(
                f"{model_path}: no tokenizer model here; train one with "
                f"`python tokenizer.py` (writes out/tokenizer/tokenizer.model)"
            )
        self.model_path = model_path
        try:
            self.sp = spm.SentencePieceProcessor(model_file=model_path)
        except (OSError, RuntimeError) as e:
            raise ValueError(f"{model_path}: not a sentencepiece model ({e})") from None
        self.vocab_size = self.sp.get_piece_size()
        retrain = "not a model tokenizer.py trains, retrain it with `python tokenizer.py`"
        for i, (name, piece) in enumerate(SPECIAL_PIECES.items()):
            reserved = self.sp.is_unknown(i) if name == "unk" else self.sp.is_control(i)
            if self.sp.id_to_piece(i) != piece or not reserved:
                kind = "" if reserved else "user-defined "  # typed text would reach it
                raise ValueError(
                    f"{model_path}: id {i} should be the control piece {piece!r} but is the "
                    f"{kind}piece {self.sp.id_to_piece(i)!r}; {retrain}"
                )
            setattr(self, f"{name}_id", i)
        marker = self.sp.id_to_piece(len(SPECIAL_PIECES))
        flags = {v: k for k, v in SEGMENTATION_MARKERS.items()}
        if marker not in flags:
            raise ValueError(f"{model_path}: unknown segmentation marker {marker!r}; {retrain}")
        if not all(self.sp.is_byte(self.sp.piece_to_id(f"<0x{b:02X}>")) for b in range(256)):
            raise ValueError(f"{model_path}: no byte fallback (unseen text is lost); {retrain}")
        self.morpheme_aware = flags[marker]
        for name, piece in VERDICT_PIECES.items():
            setattr(self, f"{name}_id", self.sp.piece_to_id(piece))
        self.meta = {}
        meta_path = os.path.join(os.path.dirname(model_path), "meta.json")
        if os.path.isfile(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
            if self.meta.get("morpheme_aware", self.morpheme_aware) != self.morpheme_aware:
                raise ValueError(
                    f"{meta_path}: morpheme_aware={self.meta['morpheme_aware']} but {model_path} "
                    f"was trained with {self.morpheme_aware}; the two come from different runs"
                )
        # id -> the bytes it stands for; decode is a lookup and a join.
        self._bytes = []
        for i in range(self.vocab_size):
            piece = self.sp.id_to_piece(i)
            if self.sp.is_byte(i):
                self._bytes.append(bytes([int(piece[3:5], 16)]))  # "<0xE2>" -> b"\xe2"
            elif self.sp.is_control(i) or self.sp.is_unknown(i):
                self._bytes.append(b"")
            else:
                self._bytes.append(piece.replace(SPACE_SYMBOL, " ").encode("utf-8"))
        self._space_symbol_ids = [
            self.sp.piece_to_id(f"<0x{b:02X}>") for b in SPACE_SYMBOL.encode("utf-8")
        ]

    def special_ids(self):
        return {name: getattr(self, f"{name}_id") for name in [*SPECIAL_PIECES, *VERDICT_PIECES]}

    def encode(self, text):
        """Plain text -> ids. Never emits a control id, adds no bos/eos; decode(encode(x)) == x."""
        assert isinstance(text, str), f"encode expects str, got {type(text).__name__}"
        chunks = _chunks(text, self.morpheme_aware)
        try:
            encoded = iter(self.sp.encode([c for c in chunks if c is not None]))
        except (TypeError, RuntimeError):  # sentencepiece's words for "not UTF-8 encodable"
            bad = next(k for k, c in enumerate(text) if "\ud800" <= c <= "\udfff")
            raise ValueError(
                f"encode: lone surrogate {text[bad]!r} at index {bad} is not valid "
                f"Unicode and has no UTF-8 bytes"
            ) from None
        ids = []
        for c in chunks:
            ids += self._space_symbol_ids if c is None else next(encoded)
        return ids

    def decode(self, ids, show_special=False):
        """ids -> text. Control ids are skipped, or shown by name with show_special=True."""
        ids = [int(i) for i in ids]  # lists, numpy arrays and tensors alike
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(
                f"decode: id {bad} is outside this tokenizer's vocabulary "
                f"(0..{self.vocab_size - 1}); was the model's vocabulary padded?"
            )
        if not show_special:
            return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")
        parts = []  # runs of text decoded as a whole, control symbols by name between them
        for is_text, run in itertools.groupby(ids, key=lambda i: bool(self._bytes[i])):
            if is_text:
                parts.append(self.decode(run))
            else:
                parts += [self.sp.id_to_piece(i) for i in run]
        return "".join(parts)

    def pieces(self, text):
        return [self.sp.id_to_piece(i) for i in self.encode(text)]

    def render_chat(self, messages, add_generation_prompt=False):
        """DESIGN.md §2: [bos] then per message [role] + encode(content) + [eot].
        loss_mask is 1 on assistant content and its closing eot, 0 elsewhere."""
        ids, mask = [self.bos_id], [0]
        for k, message in enumerate(messages):
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise ValueError(f"message {k}: unknown role {role!r}; expected one of {ROLES}")
            if not isinstance(content, str):
                raise ValueError(
                    f"message {k} ({role}): content must be a string, got {type(content).__name__}"
                )
            body = self.encode(content) + [self.eot_id]
            ids += [getattr(self, f"{role}_id")] + body
            mask += [0] + [int(role == "assistant")] * len(body)
        if add_generation_prompt:
            ids.append(self.assistant_id)
            mask.append(0)
        return ids, mask


# -------------------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    out: str = opt("out/tokenizer", "folder for tokenizer.model, .vocab, meta.json, report.json")
    vocab_size: int = opt(4096, "vocabulary size; 4096 ids fit uint16, HyperCLOVA X uses 100k")
    morpheme_aware: bool = opt(True, "cut Korean words at morpheme boundaries before BPE")
    character_coverage: float = opt(0.9995, "share of chars with a piece; rarer ones: UTF-8 bytes")
    split_digits: bool = opt(True, "one token per digit, so numbers never eat the vocabulary")
    max_train_chars: int = opt(4_000_000, "seeded sample of whole documents up to this many chars")
    heldout_every: int = opt(10, "every n-th doc per language held out of training (with --report)")
    english_share: float = opt(0.9, "(c) English-centric baseline: English share of its text")
    seed: int = opt(0, "seed of the document sample")
    report: bool = opt(True, "also train baselines (b), (c) and write report.json")


def _train_options(cfg):
    """train_tokenizer's keyword arguments from a TrainConfig, all but morpheme_aware."""
    names = "vocab_size seed character_coverage split_digits max_train_chars".split()
    return {name: getattr(cfg, name) for name in names}


def _training_sentences(docs, morpheme_aware, max_len=1000):
    """Lines -> chunks, each under sentencepiece's 4192-byte sentence limit (longer ones would be
    dropped silently): long chunks are cut before a space, which no merge crosses anyway."""
    for doc in docs:
        for line in doc.split("\n"):
            for chunk in _chunks(line, morpheme_aware):
                while chunk:  # None (a literal "▁") falls through: it is never learned
                    cut = chunk.rfind(" ", 1, max_len) if len(chunk) > max_len else len(chunk)
                    cut = cut if cut > 0 else max_len
                    yield chunk[:cut]
                    chunk = chunk[cut:]


def _varint(n):
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _ensure_pieces(model, pieces):
    """Append NORMAL pieces that BPE did not learn (the verdict pieces " A" and " B" on a tiny
    corpus). A ModelProto is protobuf; a repeated field may be appended as more bytes:
    field 1 (pieces) = {1: piece string, 2: score float}. The score is below every learned one,
    so the merge fires only where no other merge applies: other words encode as before."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    low = min(sp.get_score(i) for i in range(sp.get_piece_size())) - 1.0
    for piece in pieces:
        if sp.piece_to_id(piece) == sp.unk_id():
            raw = piece.encode("utf-8")
            msg = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + struct.pack("<f", low)
            model += b"\x0a" + _varint(len(msg)) + msg
            low -= 1.0
    return model


def _sample(corpus, max_chars, seed):
    """Keep whole documents, in a seeded random order, until max_chars; original order kept."""
    docs = [d for lang in sorted(corpus) for d in corpus[lang]]
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    keep, total = set(), 0
    for i in order:
        if not keep or total + len(docs[i]) <= max_chars:  # the first one always fits
            keep.add(i)
            total += len(docs[i])
    return [docs[i] for i in sorted(keep)]


def train_model_proto(
    docs,
    vocab_size=4096,
    morpheme_aware=True,
    character_coverage=0.9995,
    split_digits=True,
    verbose=False,
):
    """Documents -> a serialized sentencepiece BPE ModelProto (bytes). No files touched."""
    if not any(d.strip() for d in docs):
        raise ValueError("empty corpus: nothing to train the tokenizer on")
    model = io.BytesIO()
    # ids 0-3 are pad/unk/bos/eos; the chat, FIM and segmentation controls follow as 4-11
    controls = list(SPECIAL_PIECES.values())[4:] + [SEGMENTATION_MARKERS[morpheme_aware]]
    progress = tqdm(docs, desc="tokenizer", unit="doc", disable=not verbose)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(progress, morpheme_aware),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=True,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            split_digits=split_digits,
            allow_whitespace_only_pieces=True,  # runs of spaces (code indentation) are one piece
            pad_id=0,
            unk_id=1,
            bos_id=2,
            eos_id=3,
            control_symbols=controls,
            hard_vocab_limit=False,  # a small corpus gives a smaller vocabulary, not an error
            num_threads=1,  # determinism: one thread, one order of merges
            minloglevel=0 if verbose else 2,
        )
    except RuntimeError as e:
        raise ValueError(
            f"sentencepiece training failed: {e}. A vocabulary smaller than the corpus' characters "
            f"+ 268 fixed pieces needs a lower character_coverage or a larger vocab_size"
        ) from None
    return model.getvalue()


def train_tokenizer(
    texts_or_files,
    out_dir,
    vocab_size=4096,
    morpheme_aware=True,
    seed=0,
    character_coverage=0.9995,
    split_digits=True,
    max_train_chars=4_000_000,
    verbose=False,
):
    """Train a BPE tokenizer into out_dir (tokenizer.model, tokenizer.vocab, meta.json).
    texts_or_files: {lang: [docs]}, a list of documents, or paths/globs (see corpus.as_corpus).
    Deterministic: the same input and options give a byte-identical tokenizer.model."""
    corpus = as_corpus(texts_or_files)
    docs = _sample(corpus, max_train_chars, seed)
    model = train_model_proto(
        docs, vocab_size, morpheme_aware, character_coverage, split_digits, verbose
    )
    model_bytes = _ensure_pieces(model, VERDICT_PIECES.values())
    model_path = os.path.join(out_dir, "tokenizer.model")
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    if sp.get_piece_size() < vocab_size:
        print(
            f"tokenizer: the corpus only supports {sp.get_piece_size()} pieces "
            f"(asked for {vocab_size}); give it more text for a full vocabulary",
            file=sys.stderr,
        )
    escape = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n"})
    vocab = "".join(
        f"{sp.id_to_piece(i).translate(escape)}\t{sp.get_score(i)}\n"
        for i in range(sp.get_piece_size())
    )
    meta = {
        "vocab_size": sp.get_piece_size(),
        "morpheme_aware": morpheme_aware,
        "segmentation": SEGMENTATION_MARKERS[morpheme_aware],
        "special_ids": {name: i for i, name in enumerate(SPECIAL_PIECES)}
        | {name: sp.piece_to_id(p) for name, p in VERDICT_PIECES.items()},
        "settings": {
            "model_type": "bpe",
            "byte_fallback": True,
            "normalization": "identity",
            "add_dummy_prefix": False,
            "remove_extra_whitespaces": False,
            "character_coverage": character_coverage,
            "split_digits": split_digits,
            "max_train_chars": max_train_chars,
            "seed": seed,
        },
        "trained_on": {
            "documents": len(docs),
            "chars": sum(map(len, docs)),
            "corpus_documents": {lang: len(d) for lang, d in sorted(corpus.items())},
        },
    }
    os.makedirs(out_dir or ".", exist_ok=True)
    atomic_write(model_path, model_bytes)
    atomic_write(os.path.join(out_dir, "tokenizer.vocab"), vocab)
    atomic_write(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=2, ensure_ascii=False))
    return model_path


# ---------------------------- efficiency report (HCX Table 1): mean tokens per held-out document


def mean_tokens(tok, heldout):
    return {
        lang: round(sum(len(tok.encode(d)) for d in docs) / len(docs), 1)
        for lang, docs in sorted(heldout.items())
        if docs
    }


def boundaries_inside_tokens(tok, docs):
    """Share of Korean morpheme boundaries (segment_korean) that fall inside a token, i.e.
    where BPE merged a stem with its particle/ending. 0 by construction when morpheme-aware."""
    inside = total = 0
    for doc in docs:  # byte offsets where tokens end, and where morphemes end (the last aside)
        token_ends = set(itertools.accumulate(len(tok._bytes[i]) for i in tok.encode(doc)))
        cuts = list(itertools.accumulate(len(c.encode("utf-8")) for c in segment_korean(doc)[:-1]))
        total += len(cuts)
        inside += sum(cut not in token_ends for cut in cuts)
    return round(inside / max(total, 1), 4)


def efficiency_report(corpus, cfg):
    """Train (a) into cfg.out, (b) and (c) into cfg.out/baselines/; write report.json."""
    train, heldout = split_heldout(corpus, cfg.heldout_every)
    baselines = os.path.join(cfg.out, "baselines")
    english = english_centric(train, cfg.english_share)
    runs = {  # name: (training corpus, folder, morpheme_aware)
        "a_this_tokenizer": (train, cfg.out, cfg.morpheme_aware),
        "b_without_morphemes": (train, os.path.join(baselines, "without_morphemes"), False),
        "c_english_centric": (english, os.path.join(baselines, "english_centric"), False),
    }
    report = {
        "vocab_size": cfg.vocab_size,
        "morpheme_aware": cfg.morpheme_aware,
        "heldout_every": cfg.heldout_every,
        "heldout_documents": {lang: len(d) for lang, d in sorted(heldout.items())},
        "mean_tokens_per_document": {},
    }
    for name, (texts, out, aware) in tqdm(runs.items(), desc="report", unit="tokenizer"):
        tok = Tokenizer(train_tokenizer(texts, out, morpheme_aware=aware, **_train_options(cfg)))
        report["mean_tokens_per_document"][name] = mean_tokens(tok, heldout)
        if heldout.get("ko"):
            report.setdefault("ko_morpheme_boundaries_inside_a_token", {})[name] = (
                boundaries_inside_tokens(tok, heldout["ko"])
            )
    atomic_write(os.path.join(cfg.out, "report.json"), json.dumps(report, indent=2))
    return report


# ------------------------------------------------------------------------------------------- CLI


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, each flag with its default."""


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("train", "encode"):
        argv = ["train"] + argv  # train is the default command; --help shows its knobs
    parser = argparse.ArgumentParser(prog="tokenizer.py")
    sub = parser.add_subparsers(dest="command")
    p_train = sub.add_parser(
        "train",
        description=__doc__,
        formatter_class=HelpFormatter,
        help="train a tokenizer and write the efficiency report (default command)",
    )
    p_train.add_argument(
        "--input",
        nargs="+",
        help="files, dirs or globs (.txt/.jsonl); None: corpus.default_corpus()",
    )
    p_train.add_argument("--skip-bad", action="store_true", help="skip and count bad .jsonl lines")
    add_config_flags(p_train, TrainConfig)
    p_enc = sub.add_parser("encode", help="print the morphemes, pieces and ids of TEXT")
    p_enc.add_argument("text")
    p_enc.add_argument("--model", default="out/tokenizer/tokenizer.model")
    args = parser.parse_args(argv)
    try:
        run(args)
    except (FileNotFoundError, ValueError) as e:  # bad input: one clear line, no traceback
        sys.exit(f"tokenizer.py: {e}")


def run(args):
    if args.command == "encode":
        folder = os.path.isdir(args.model)  # a tokenizer's or a checkpoint's folder
        tok = Tokenizer(os.path.join(args.model, "tokenizer.model") if folder else args.model)
        ids = tok.encode(args.text)
        if tok.morpheme_aware:
            print("morphemes:", "|".join(segment_korean(args.text)))
        print(f"{len(ids)} tokens:", " ".join(tok.sp.id_to_piece(i) for i in ids))
        print("ids:", ids)
        return

    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    print("config:", json.dumps(dataclasses.asdict(cfg)))
    corpus = (
        group_by_lang(read_documents(args.input, args.skip_bad)) if args.input else default_corpus()
    )
    sizes = {lang: f"{len(d)} docs, {sum(map(len, d))} chars" for lang, d in sorted(corpus.items())}
    print("corpus:", sizes)
    if cfg.report:
        print(tokenizer_table(efficiency_report(corpus, cfg)))
        print(f"wrote {cfg.out}/tokenizer.model, meta.json, report.json")
    else:
        path = train_tokenizer(
            corpus, cfg.out, morpheme_aware=cfg.morpheme_aware, verbose=True, **_train_options(cfg)
        )
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
