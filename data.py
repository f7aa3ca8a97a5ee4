"""data.py: the bilingual pretraining corpus: cleaning, mixture, FIM, packing (HyperCLOVA X §2.1).

HyperCLOVA X pretrains on Korean, multilingual (mostly English) and code in equal thirds, after
dropping short, repetitive and duplicated documents and scrubbing personal information, and trains
left-to-right and fill-in-the-middle (FIM, Bavarian et al. 2022) jointly. This script does all of
that, on the embedded default corpus (real text that ships with the project: corpus.py,
corpus/SOURCES.md) or on your own files (read by readers.read_sources):

    python data.py                                        # embedded default -> out/data/
    python data.py --source wiki:ko:'~/kowiki/*.txt' --source docs:en:notes/ \
                   --source src:code:repo/ --mix ko=2,en=1,code=1 --upsample wiki=2 --fim-rate 0.5

Pipeline: read -> PII scrub -> length / repetition filters -> exact + near-duplicate removal ->
split train/val by document -> tokenize -> mix language groups to the requested token shares
(repeating or subsampling documents) -> FIM on a --fim-rate share of training documents -> pack,
eos after each. Writes out/data/{train,val,val_<group>}.bin (uint16 ids, uint32 past 65536) and
meta.json. pretrain.py imports PretrainBatches (random windows, resumable and rank-sharded by
construction), val_batches and context_length_at (HCX two-phase schedule).
"""

import dataclasses
import hashlib
import json
import os
import re
import time
import typing
import unicodedata
import zlib
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from readers import DataError, atomic_write_dir, load_tokens, opt, parse_config, parse_weights
from readers import file_sha256, read_sources, write_file
from corpus import default_sources
from report import data_summary


@dataclass
class DataConfig:
    out_dir: str = opt("out/data", "folder to write train.bin, val.bin, meta.json")
    tokenizer: str = opt("out/tokenizer/tokenizer.model", "sentencepiece model from tokenizer.py")
    source: typing.Optional[list] = opt(
        None,
        "NAME:GROUP:PATH[,PATH..] (repeat); PATH: .txt (blank-line separated docs), .jsonl "
        "({'text', optional 'lang'}), code file, folder or glob; none = embedded default",
    )
    mix: str = opt("ko=1,en=1,code=1", "token share per language group (normalized); HCX: thirds")
    upsample: str = opt("", "NAME=FACTOR,..: repeat a source's documents within its group")
    max_tokens: int = opt(0, "training tokens after mixing; 0 = as many as the corpus has")
    val_fraction: float = opt(0.05, "share of each source's documents held out for validation")
    min_chars: int = opt(200, "drop documents shorter than this (characters)")
    max_dup_line_frac: float = opt(0.3, "drop if this share of lines repeat an earlier line")
    max_dup_ngram_frac: float = opt(0.3, "drop if this share of word 5-grams repeat (not for code)")
    near_dup_jaccard: float = opt(0.8, "MinHash near-duplicate threshold on word 5-gram shingles")
    pii: bool = opt(True, "scrub e-mail local parts and phone numbers")
    fim_rate: float = opt(0.5, "share of training documents turned into fill-in-the-middle")
    spm_rate: float = opt(0.5, "share of FIM documents in SPM order (the rest PSM)")
    fim_split: str = opt("thirds", "thirds (HCX) | random (Bavarian et al., uniform points)")
    code_chars: int = opt(1_000_000, "default corpus: characters of Python stdlib source to use")
    skip_bad: bool = opt(False, "skip malformed .jsonl lines (counted) instead of stopping")
    seed: int = opt(0, "seed for split, mixture and FIM")


# -------------------------------------------------------------------------- cleaning
EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24})"
    r"(?![A-Za-z0-9_(@-])"
)
PHONE = re.compile(r"""(?x)(?<![A-Za-z0-9.+/-])(?:  # not glued to a word, number or version string
      \+[1-9]\d{0,2}[ -]?(?:\(0?\d{1,4}\)|\d{1,4})(?:[ -]?\d{2,4}){2,3}  # +82 10-1234-5678,
                                                                         # +1 (555) 123 4567
    | \(0\d{1,2}\)[ ]?\d{3,4}[ .-]\d{4}                                 # (02) 1234-5678
    | 0\d{1,2}[ .-]\d{3,4}[ .-]\d{4}                                    # 010-1234-5678, 02-123-4567
    | \(\d{3}\)[ ]?\d{3}[ .-]\d{4}                                      # (555) 123-4567
    | \d{3}[.-]\d{3}[.-]\d{4}                                           # 555-123-4567
    )(?![A-Za-z0-9_-]|\.\d)""")


def scrub_pii(text):
    """-> (text, n_emails, n_phones):
    e-mail local parts become <EMAIL> (the domain stays), phones are removed."""
    text, n_email = EMAIL.subn(lambda m: "<EMAIL>@" + m.group(1), text)
    text, n_phone = PHONE.subn("", text)
    return text, n_email, n_phone


def normalize(text):
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def dup_line_frac(text):
    """Share of non-blank lines that repeat an earlier line (Gopher, Rae et al. 2021)."""
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    return 1 - len(set(lines)) / len(lines) if lines else 0.0


def word_ngrams(words, n=5):
    return [" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))]


def dup_ngram_frac(text, n=5):
    """Share of word n-grams that repeat an earlier n-gram of the document."""
    grams = word_ngrams(text.split(), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def shingles(text, n=5):
    return {zlib.crc32(g.encode()) for g in word_ngrams(text.split(), n)}


MERSENNE_61 = (1 << 61) - 1


def minhash(shingle_set, a, b):
    """(num_perm,) signature: min over shingles of (a*x + b) mod p; a, b, x < 2^32: no overflow."""
    x = np.fromiter(shingle_set, dtype=np.uint64, count=len(shingle_set))
    return ((a[:, None] * x[None, :] + b[:, None]) % np.uint64(MERSENNE_61)).min(axis=1)


def near_duplicates(texts, threshold=0.8, num_perm=64, bands=16, seed=0):
    """Indices of documents whose word 5-gram Jaccard similarity with an earlier kept document is
    >= threshold. MinHash + LSH banding finds candidates; the exact Jaccard of the sets decides."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 32, num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, num_perm, dtype=np.uint64)
    rows = num_perm // bands
    buckets, kept_sets, dups = {}, {}, set()
    for i, text in enumerate(tqdm(texts, desc="near-dup", leave=False)):
        sh = shingles(text)
        sig = minhash(sh, a, b)
        keys = [(band, sig[band * rows : (band + 1) * rows].tobytes()) for band in range(bands)]
        candidates = {j for k in keys for j in buckets.get(k, ())}
        if any(len(sh & kept_sets[j]) / len(sh | kept_sets[j]) >= threshold for j in candidates):
            dups.add(i)
            continue
        kept_sets[i] = sh
        for k in keys:
            buckets.setdefault(k, []).append(i)
    return dups


COUNTS = ("jsonl_skipped", "emails", "phones", "too_short", "repetitive", "exact_dup", "near_dup")


def clean(sources, cfg):
    """Scrub and filter sources in place (docs -> [(text, group)]); returns counts per source."""
    counts = {s.name: dict(dict.fromkeys(COUNTS, 0), jsonl_skipped=len(s.skipped)) for s in sources}
    seen, pool = set(), []  # exact-dup hashes; (source index, doc index) of survivors for near-dup
    for si, s in enumerate(sources):
        kept = []
        for text, lang in tqdm(s.docs, desc=f"clean {s.name}", leave=False):
            group = lang or s.group
            text = normalize(text)
            if cfg.pii:
                text, n_email, n_phone = scrub_pii(text)
                counts[s.name]["emails"] += n_email
                counts[s.name]["phones"] += n_phone
            if not text or (not s.curated and len(text) < cfg.min_chars):
                counts[s.name]["too_short"] += 1
            elif not s.curated and (
                dup_line_frac(text) > cfg.max_dup_line_frac
                or (group != "code" and dup_ngram_frac(text) > cfg.max_dup_ngram_frac)
            ):
                counts[s.name]["repetitive"] += 1
            else:
                key = hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).digest()
                if key in seen:
                    counts[s.name]["exact_dup"] += 1
                else:
                    seen.add(key)
                    kept.append((text, group))
        s.docs = kept
        pool += [(si, di) for di in range(len(kept))]
    if cfg.near_dup_jaccard < 1:
        texts = [sources[si].docs[di][0] for si, di in pool]
        drop = {pool[i] for i in near_duplicates(texts, cfg.near_dup_jaccard, seed=cfg.seed)}
        for si, s in enumerate(sources):
            before = len(s.docs)
            s.docs = [d for di, d in enumerate(s.docs) if (si, di) not in drop]
            counts[s.name]["near_dup"] = before - len(s.docs)
    return counts


# -------------------------------------------------------------------------- fill-in-the-middle
def fim_split(text, rng, mode="thirds"):
    """-> (prefix, middle, suffix), joined = text; cut at thirds (HCX) or 2 uniform points."""
    assert mode in ("thirds", "random"), f"fim split {mode!r}: use thirds or random"
    n = len(text)
    i, j = (n // 3, 2 * n // 3) if mode == "thirds" else sorted(rng.integers(0, n + 1, size=2))
    return text[:i], text[i:j], text[j:]


def fim_ids(prefix, middle, suffix, tok, spm=False):
    """PSM: <pre> P <suf> S <mid> M.  SPM: <pre> <suf> S <mid> P M (Bavarian et al. App. D, as
    CodeLlama and StarCoder do: the prefix runs into the middle). The caller appends eos."""
    p, m, s = tok.encode(prefix), tok.encode(middle), tok.encode(suffix)
    if spm:
        return [tok.fim_prefix_id, tok.fim_suffix_id] + s + [tok.fim_middle_id] + p + m
    return [tok.fim_prefix_id] + p + [tok.fim_suffix_id] + s + [tok.fim_middle_id] + m


def document_ids(text, ltr_ids, tok, rng, cfg):
    """One training document -> (ids ending in eos, kind in {"ltr", "psm", "spm"})."""
    if rng.random() < cfg.fim_rate:
        spm = rng.random() < cfg.spm_rate
        ids = fim_ids(*fim_split(text, rng, cfg.fim_split), tok, spm)
        return ids + [tok.eos_id], "spm" if spm else "psm"
    return ltr_ids + [tok.eos_id], "ltr"


# -------------------------------------------------------------------------- mixture
def mix(pools, weights, max_tokens, rng):
    """pools: {group: [(doc_id, n_tokens), ..]} -> {group: [doc_id, ..]} whose token counts have the
    requested shares. A group short of its target repeats its documents (whole shuffled passes, then
    a shuffled prefix); a group over it is subsampled."""
    total_w = sum(weights[g] for g in pools)  # > 0: build refuses weights that are all 0
    budget = max_tokens or sum(n for docs in pools.values() for _, n in docs)
    chosen = {}
    for g, docs in pools.items():
        target, picked, got = budget * weights[g] / total_w, [], 0
        while docs and got < target:
            for k in rng.permutation(len(docs)):
                if got >= target:
                    break
                picked.append(docs[k][0])
                got += docs[k][1]
        chosen[g] = picked
    return chosen


# -------------------------------------------------------------------------- building out/data
def load_tokenizer(path, train_texts):
    """tokenizer.Tokenizer at path; trains the default one first when the default path has none."""
    import tokenizer

    if not os.path.exists(path):
        if os.path.normpath(path) != os.path.normpath(DataConfig.tokenizer):
            raise DataError(
                f"{path}: no tokenizer model; run `python tokenizer.py` or pass --tokenizer"
            )
        print(f"{path} not found: training the default tokenizer on this corpus first")
        path = tokenizer.train_tokenizer(train_texts, os.path.dirname(path))
    return tokenizer.Tokenizer(path), path


def special_ids(tok):
    """{"eos": 1, ..}: the tokenizer's special_ids() where it has one, else its *_id attributes."""
    if hasattr(tok, "special_ids"):
        return {k: int(v) for k, v in tok.special_ids().items()}
    ids = {k[:-3]: getattr(tok, k) for k in dir(tok) if k.endswith("_id")}
    return {k: int(v) for k, v in ids.items() if isinstance(v, int)}


def build(cfg, tok=None):
    """Runs the whole pipeline; writes cfg.out_dir atomically and returns the meta dict."""
    t0 = time.time()
    if cfg.fim_split not in ("thirds", "random"):
        raise DataError(f"--fim-split {cfg.fim_split!r}: use thirds or random")
    if cfg.max_tokens < 0:
        raise DataError(f"--max-tokens {cfg.max_tokens}: use 0 (as many as the corpus has) or more")
    sources = (
        read_sources(cfg.source, cfg.skip_bad) if cfg.source else default_sources(cfg.code_chars)
    )
    weights = parse_weights(cfg.mix, "--mix")
    upsample = parse_weights(cfg.upsample, "--upsample")
    names = [s.name for s in sources]
    for name in upsample:
        if name not in names:
            raise DataError(f"--upsample {name}: no such source (sources: {', '.join(names)})")
    docs_in = {s.name: len(s.docs) for s in sources}
    counts = clean(sources, cfg)
    groups = sorted({g for s in sources for _, g in s.docs})
    if not groups:
        inputs = ", ".join(f"{s.name}: {s.origin}" for s in sources)
        raise DataError(
            f"no document left after filtering: check the inputs ({inputs}) or relax --min-chars "
            "and the filters"
        )
    missing = [g for g in groups if g not in weights]
    if missing:
        raise DataError(
            f"--mix {cfg.mix!r} has no weight for group(s) {', '.join(missing)}; "
            f"add e.g. {missing[0]}=1"
        )
    if sum(weights[g] for g in groups) <= 0:
        raise DataError(
            f"--mix {cfg.mix!r}: the groups present ({', '.join(groups)}) all have weight 0"
        )

    rng = np.random.default_rng(cfg.seed)
    train_docs, val_docs = [], {g: [] for g in groups}  # train: (text, group, source name)
    for s in sources:
        order = rng.permutation(len(s.docs))
        # curated task text stays whole in training: its facts are what the later phases ask about
        n_val = 0 if len(s.docs) < 2 or s.curated else int(round(cfg.val_fraction * len(s.docs)))
        for rank, k in enumerate(order):
            text, group = s.docs[k]
            if rank < n_val:
                val_docs[group].append(text)
            else:
                train_docs.append((text, group, s.name))
    if not train_docs:
        raise DataError("the training split is empty: add documents or lower --val-fraction")
    tok_path = cfg.tokenizer
    if tok is None:
        tok, tok_path = load_tokenizer(tok_path, [t for t, _, _ in train_docs])
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32

    ltr = [tok.encode(t) for t, _, _ in tqdm(train_docs, desc="tokenize", leave=False)]
    pools = {g: [] for g in groups}
    for i, (_, group, name) in enumerate(train_docs):
        factor = upsample.get(name, 1.0)
        copies = int(factor) + (rng.random() < factor - int(factor))
        pools[group] += [(i, len(ltr[i]) + 1)] * copies
    chosen = mix({g: p for g, p in pools.items() if p}, weights, cfg.max_tokens, rng)

    order = [i for g in chosen for i in chosen[g]]
    assert order, "mix keeps at least one document of a group with training documents"
    order = [order[k] for k in rng.permutation(len(order))]
    fim_counts = dict.fromkeys(("ltr", "psm", "spm"), 0)
    train_ids, group_tokens, source_tokens = [], {}, {}
    for i in tqdm(order, desc="pack", leave=False):
        text, group, name = train_docs[i]
        ids, kind = document_ids(text, ltr[i], tok, rng, cfg)
        fim_counts[kind] += 1
        train_ids.append(ids)
        group_tokens[group] = group_tokens.get(group, 0) + len(ids)
        source_tokens[name] = source_tokens.get(name, 0) + len(ids)
    train_flat = np.concatenate([np.asarray(x, dtype=dtype) for x in train_ids])

    val_meta, val_flat = {}, []
    for g in groups:
        ids = [x for t in val_docs[g] for x in tok.encode(t) + [tok.eos_id]]
        n_bytes = sum(len(t.encode()) for t in val_docs[g])
        val_meta[g] = {"docs": len(val_docs[g]), "tokens": len(ids), "bytes": n_bytes}
        val_flat.append(np.asarray(ids, dtype=dtype))

    n_train_tokens = int(len(train_flat))
    val_note = "tokens include one eos per document; bytes are UTF-8 bytes of the document text"
    meta = {
        "vocab_size": int(tok.vocab_size),
        "dtype": np.dtype(dtype).name,
        "tokenizer": os.path.abspath(tok_path),
        "tokenizer_sha256": file_sha256(tok_path),
        "special_ids": special_ids(tok),
        "train": {"tokens": n_train_tokens, "docs": len(order)},
        "val": {"tokens": int(sum(len(v) for v in val_flat)), "groups": val_meta, "note": val_note},
        "mixture": {
            g: {
                "weight": weights[g],
                "target_share": weights[g] / sum(weights[x] for x in chosen),
                "tokens": group_tokens.get(g, 0),
                "share": group_tokens.get(g, 0) / n_train_tokens,
                "epochs": group_tokens.get(g, 0) / max(1, sum(n for _, n in pools[g])),
            }
            for g in chosen
        },
        "sources": {
            s.name: {
                "group": s.group,
                "origin": s.origin,
                "docs_in": docs_in[s.name],
                "docs_kept": len(s.docs),
                "chars": sum(len(t) for t, _ in s.docs),
                "upsample": upsample.get(s.name, 1.0),
                "train_tokens": source_tokens.get(s.name, 0),
                "filters": counts[s.name],
            }
            for s in sources
        },
        "fim": {
            "rate": cfg.fim_rate,
            "spm_rate": cfg.spm_rate,
            "split": cfg.fim_split,
            "docs": fim_counts,
            "sentinels": {
                k: int(getattr(tok, k + "_id")) for k in ("fim_prefix", "fim_middle", "fim_suffix")
            },
        },
        "skipped_records": [where for s in sources for where in s.skipped],
        "config": dataclasses.asdict(cfg),
        "seconds": round(time.time() - t0, 2),
    }

    def write(tmp):  # a temporary folder, swapped in for cfg.out_dir once complete
        train_flat.tofile(os.path.join(tmp, "train.bin"))
        np.concatenate(val_flat).tofile(os.path.join(tmp, "val.bin"))
        for g, ids in zip(groups, val_flat):
            ids.tofile(os.path.join(tmp, f"val_{g}.bin"))
        write_file(os.path.join(tmp, "meta.json"), json.dumps(meta, ensure_ascii=False, indent=1))

    atomic_write_dir(cfg.out_dir, write)
    return meta


# -------------------------------------------------------------------------- batches for pretrain.py
class PretrainBatches:
    """Random training windows over a token file. The global batch at a step is
    batch_size * world_size non-overlapping windows drawn from an RNG seeded by (seed, step);
    rank r takes rows [r*B, (r+1)*B). So resuming needs only the step, ranks never share a window,
    and 1 rank x 2B == 2 ranks x B."""

    def __init__(self, bin_path, batch_size, seed=0, rank=0, world_size=1, dtype=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        self.bin_path, self.batch_size, self.seed = bin_path, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.data = load_tokens(bin_path, dtype)

    def global_starts(self, step, seq_len):
        """(batch_size * world_size,) start offsets of this step's windows of seq_len + 1 tokens."""
        n_global, span = self.batch_size * self.world_size, seq_len + 1
        rng = np.random.default_rng([self.seed, step])
        offset = int(rng.integers(0, span))  # a random phase: window edges move between steps
        n_windows = (len(self.data) - offset) // span
        if n_windows < n_global:
            raise ValueError(
                f"{self.bin_path}: {len(self.data):,} tokens hold {n_windows} windows "
                f"of {span} tokens, but a step needs {n_global}; "
                "use a smaller batch size or seq_len, or more data"
            )
        return offset + rng.choice(n_windows, size=n_global, replace=False) * span

    def get(self, step, seq_len):
        """-> (x, y) int64 (B, T) for this rank at this step; y is x shifted left by one token."""
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        starts = self.global_starts(step, seq_len)[lo:hi]
        rows = [self.data[s : s + seq_len + 1] for s in starts]
        windows = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T+1)
        return windows[:, :-1], windows[:, 1:]


def val_batches(bin_path, batch_size, seq_len, max_batches=0, dtype=None):
    """Yields fixed (x, y) int64 (B, T) batches of the consecutive windows of a token file, so
    every token (after the first) is predicted once; max_batches = 0 means all. Fewer windows are
    spread evenly over the file (val.bin holds its groups one after another: the first windows
    would all be code and English). The last batch may be smaller."""
    data = load_tokens(bin_path, dtype)
    n_windows, n = (len(data) - 1) // seq_len, max_batches * batch_size
    picked = np.linspace(0, n_windows - 1, n).round() if 0 < n < n_windows else range(n_windows)
    for first in range(0, len(picked), batch_size):
        rows = [data[int(i) * seq_len :][: seq_len + 1] for i in picked[first : first + batch_size]]
        w = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T+1)
        yield w[:, :-1], w[:, 1:]


def context_length_at(step, total_steps, short_len, long_len, long_fraction=0.1):
    """HCX two-phase context schedule: short_len, then long_len for the last long_fraction."""
    if not 0 <= long_fraction <= 1:
        raise ValueError(f"long_fraction {long_fraction} is not in [0, 1]")
    n_long = max(1, round(total_steps * long_fraction)) if long_fraction > 0 else 0
    return long_len if step >= total_steps - n_long else short_len


# -------------------------------------------------------------------------- command line
def main(argv=None):
    cfg = parse_config(DataConfig, argv)
    print(f"config: {json.dumps(dataclasses.asdict(cfg), ensure_ascii=False)}")
    try:
        meta = build(cfg)
    except DataError as e:
        raise SystemExit(f"error: {e}")
    print(data_summary(meta))


if __name__ == "__main__":
    main()
