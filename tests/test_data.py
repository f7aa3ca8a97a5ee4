"""Tests for data.py: the embedded default corpus, mixture, FIM, PII, dedup, the resumable
rank-sharded sampler, the context schedule and bad input. Tokenizers here: ByteTokenizer (UTF-8
bytes, exact round trip, so FIM pieces can be read back) and a tiny sentencepiece model trained in a
fixture; the real tokenizer.Tokenizer runs in the CLI test."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import data
from corpus import CORPUS_DIR, default_corpus, default_sources, hangul_share
from readers import Source, parse_weights, read_sources
from report import data_summary

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "data")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ByteTokenizer:
    """ids 0..7 are specials, 8..263 the UTF-8 bytes: decode(encode(x)) == x for every x."""

    pad_id, bos_id, eos_id, fim_prefix_id, fim_middle_id, fim_suffix_id = 0, 1, 2, 3, 4, 5
    vocab_size = 264

    def encode(self, text):
        return [b + 8 for b in text.encode("utf-8")]

    def decode(self, ids):
        return bytes(i - 8 for i in ids if i >= 8).decode("utf-8")


@pytest.fixture(scope="module")
def spm_tok():
    """A 1000-piece sentencepiece BPE on a slice of the default corpus, FIM sentinels as control
    symbols."""
    import sentencepiece as spm

    corpus = default_corpus()
    lines = [
        ln
        for g in ("ko", "en", "code")
        for d in corpus[g][:60]
        for ln in d.split("\n")
        if ln.strip()
    ]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=1000,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=0.9995,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        control_symbols=["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"],
        minloglevel=2,
        num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())

    class SpmTokenizer:
        pad_id, bos_id, eos_id = sp.pad_id(), sp.bos_id(), sp.eos_id()
        fim_prefix_id, fim_middle_id, fim_suffix_id = (
            sp.piece_to_id(f"<|fim_{k}|>") for k in ("prefix", "middle", "suffix")
        )
        vocab_size = sp.get_piece_size()
        encode = staticmethod(sp.encode)

    return SpmTokenizer()


def split_docs(ids, eos):
    """train.bin -> list of documents (tuples of ids, eos removed)."""
    cuts = np.flatnonzero(ids == eos)
    return [tuple(ids[a + 1 : b].tolist()) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def read_bin(path, dtype=np.uint16):
    return np.fromfile(path, dtype=dtype)


# ----------------------------------------------------------------------------- the embedded default
def test_default_corpus_is_real_korean_english_and_code():
    corpus = default_corpus()
    assert {"ko", "en", "code"} <= set(corpus)
    for group in ("ko", "en", "code"):
        assert sum(len(d.encode()) for d in corpus[group]) > 500_000, group  # 0.5 MB or more each
    ko_share = np.mean([hangul_share(d, of="hangul+latin") for d in corpus["ko"]])
    en_share = np.mean([hangul_share(d, of="hangul+latin") for d in corpus["en"]])
    assert ko_share > 0.8 and en_share < 0.05
    en_words = " ".join(corpus["en"]).lower().split()
    assert en_words.count("the") / len(en_words) > 0.03  # English prose: "the" is ~5% of words
    for doc in corpus["code"]:
        compile(doc, "<stdlib>", "exec")  # real Python, as the interpreter sees it
    assert "대한민국은 민주공화국이다" in "".join(corpus["ko"])


def test_default_build_hits_the_mixture(tmp_path, spm_tok):
    """The no-argument build (default corpus, default mix 1/3 each): every training document is a
    cleaned source document, and the token share of each group, measured from train.bin, is within
    10% of 1/3."""
    cfg = data.DataConfig(out_dir=str(tmp_path / "data"), fim_rate=0.0)
    meta = data.build(cfg, spm_tok)
    sources = default_sources()
    data.clean(sources, cfg)
    group_of = {tuple(spm_tok.encode(t)): g for s in sources for t, g in s.docs}
    docs = split_docs(read_bin(tmp_path / "data" / "train.bin"), spm_tok.eos_id)
    assert len(docs) == meta["train"]["docs"] and all(d in group_of for d in docs)
    tokens = {g: 0 for g in ("ko", "en", "code")}
    for d in docs:
        tokens[group_of[d]] += len(d) + 1
    total = sum(tokens.values())
    for g, n in tokens.items():
        assert abs(n / total - 1 / 3) <= 0.1 / 3, (g, n / total)
    table = data_summary(meta)
    for name in meta["sources"]:
        assert name in table
    for g in ("ko", "en", "code"):  # per-language val files with their byte and token counts
        val = read_bin(tmp_path / "data" / f"val_{g}.bin")
        assert len(val) == meta["val"]["groups"][g]["tokens"] > 0
        assert (val == spm_tok.eos_id).sum() == meta["val"]["groups"][g]["docs"]
    assert meta["vocab_size"] == spm_tok.vocab_size and meta["dtype"] == "uint16"
    assert len(read_bin(tmp_path / "data" / "val.bin")) == meta["val"]["tokens"]


@pytest.mark.skipif(
    not os.path.exists(os.path.join(ROOT, "tokenizer.py")),
    reason="tokenizer.py not in the tree yet",
)
def test_cli_no_arguments_on_a_fresh_folder(tmp_path):
    """`python data.py` with no arguments, in a folder with nothing in it: trains the default
    tokenizer (tokenizer.Tokenizer, the real one), builds out/data, prints the per-source table."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "data.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    meta = json.loads((tmp_path / "out" / "data" / "meta.json").read_text())
    for name in ("ko_law", "en_gnome_help", "code_python_stdlib"):
        assert name in run.stdout
    for g in ("ko", "en", "code"):
        assert abs(meta["mixture"][g]["share"] - 1 / 3) <= 0.1 / 3
    import tokenizer

    tok = tokenizer.Tokenizer(meta["tokenizer"])
    train = read_bin(tmp_path / "out" / "data" / "train.bin")
    assert len(train) == meta["train"]["tokens"] and train.max() < tok.vocab_size
    assert (train == tok.eos_id).sum() == meta["train"]["docs"]


# ----------------------------------------------------------------------------- FIM
def parse_fim(ids, tok):
    """Reads a FIM document back into (order, prefix, middle, suffix) text."""
    P, M, S = tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id
    if ids[:2] == [P, S]:  # SPM: <pre> <suf> S <mid> P+M
        mid = ids.index(M)
        return "spm", ids[2:mid], ids[mid + 1 :]
    assert ids[0] == P
    suf, mid = ids.index(S), ids.index(M)
    assert suf < mid
    return "psm", ids[1:suf], ids[suf + 1 : mid], ids[mid + 1 :]


def test_fim_psm_and_spm_pieces_order_and_sentinels():
    tok = ByteTokenizer()
    doc = "def f(x):\n    return x * 2  # 두 배\n" * 3
    prefix, middle, suffix = data.fim_split(doc, None, "thirds")
    n = len(doc)
    assert (prefix, middle, suffix) == (doc[: n // 3], doc[n // 3 : 2 * n // 3], doc[2 * n // 3 :])
    enc = tok.encode
    psm = data.fim_ids(prefix, middle, suffix, tok, spm=False)
    assert psm == [tok.fim_prefix_id] + enc(prefix) + [tok.fim_suffix_id] + enc(suffix) + [
        tok.fim_middle_id
    ] + enc(middle)
    spm = data.fim_ids(prefix, middle, suffix, tok, spm=True)
    assert spm == [tok.fim_prefix_id, tok.fim_suffix_id] + enc(suffix) + [tok.fim_middle_id] + enc(
        prefix
    ) + enc(middle)
    for ids in (psm, spm):  # each sentinel exactly once
        assert [
            ids.count(t) for t in (tok.fim_prefix_id, tok.fim_middle_id, tok.fim_suffix_id)
        ] == [1, 1, 1]
    _, p, s, m = parse_fim(psm, tok)
    assert tok.decode(p) + tok.decode(m) + tok.decode(s) == doc
    _, s, pm = parse_fim(spm, tok)
    assert tok.decode(pm) + tok.decode(s) == doc and tok.decode(pm).startswith(prefix)


def test_fim_random_split_is_uniform_and_lossless():
    rng = np.random.default_rng(0)
    doc = "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다. " * 4
    cuts = []
    for _ in range(3000):
        p, m, s = data.fim_split(doc, rng, "random")
        assert p + m + s == doc
        cuts.append((len(p) / len(doc), (len(p) + len(m)) / len(doc)))
    first, second = np.array(cuts).T
    # two sorted uniform points: E[min] = 1/3, E[max] = 2/3 (Bavarian et al.'s character-level
    # split)
    assert abs(first.mean() - 1 / 3) < 0.02 and abs(second.mean() - 2 / 3) < 0.02


def test_fim_share_in_train_bin_matches_fim_rate(tmp_path):
    tok, rate, spm_rate = ByteTokenizer(), 0.3, 0.5
    cfg = data.DataConfig(
        out_dir=str(tmp_path / "d"),
        source=[
            f"ko:ko:{CORPUS_DIR}/ko_gnome_help.jsonl",
            f"en:en:{CORPUS_DIR}/en_gnome_help.jsonl",
        ],
        mix="ko=1,en=1",
        fim_rate=rate,
        spm_rate=spm_rate,
        fim_split="random",
        val_fraction=0.0,
    )
    meta = data.build(cfg, tok)
    sources = read_sources(cfg.source)
    data.clean(sources, cfg)
    cleaned = {t for s in sources for t, _ in s.docs}
    docs = [list(d) for d in split_docs(read_bin(tmp_path / "d" / "train.bin"), tok.eos_id)]
    kinds = {"psm": 0, "spm": 0, "ltr": 0}
    for ids in docs:
        if ids[0] != tok.fim_prefix_id:
            kinds["ltr"] += 1
            assert tok.decode(ids) in cleaned
            continue
        parsed = parse_fim(ids, tok)
        kinds[parsed[0]] += 1
        text = (
            tok.decode(parsed[1]) + tok.decode(parsed[3]) + tok.decode(parsed[2])
            if parsed[0] == "psm"
            else tok.decode(parsed[2]) + tok.decode(parsed[1])
        )
        assert text in cleaned  # the pieces join back into the document
    n, n_fim = len(docs), kinds["psm"] + kinds["spm"]
    assert kinds == meta["fim"]["docs"]
    sigma = (rate * (1 - rate) / n) ** 0.5
    assert abs(n_fim / n - rate) < 4 * sigma, (n_fim, n)
    assert abs(kinds["spm"] / n_fim - spm_rate) < 4 * (0.25 / n_fim) ** 0.5


# ----------------------------------------------------------------------------- cleaning
def test_pii_fixture_scrubbed_exactly():
    with open(os.path.join(FIX, "pii_input.txt"), encoding="utf-8") as fh:
        text = fh.read()
    with open(os.path.join(FIX, "pii_expected.txt"), encoding="utf-8") as fh:
        expected = fh.read()
    scrubbed, n_email, n_phone = data.scrub_pii(text)
    assert scrubbed == expected
    assert (n_email, n_phone) == (3, 6)
    assert data.scrub_pii(expected)[1:] == (0, 0)  # idempotent: nothing left to find


def test_pii_through_the_pipeline(tmp_path):
    tok = ByteTokenizer()
    cfg = data.DataConfig(
        out_dir=str(tmp_path / "d"),
        source=[f"p:en:{FIX}/pii_input.txt"],
        mix="en=1",
        fim_rate=0.0,
        val_fraction=0.0,
        min_chars=10,
    )
    meta = data.build(cfg, tok)
    with open(os.path.join(FIX, "pii_expected.txt"), encoding="utf-8") as fh:
        expected = fh.read().strip()
    assert tok.decode(read_bin(tmp_path / "d" / "train.bin").tolist()) == expected
    assert (
        meta["sources"]["p"]["filters"]["emails"] == 3
        and meta["sources"]["p"]["filters"]["phones"] == 6
    )


def test_dedup_removes_exact_and_near_duplicates_keeps_the_rest():
    path = os.path.join(FIX, "dedup.jsonl")
    records = [json.loads(line) for line in open(path, encoding="utf-8")]
    source = Source("fx", "en", [(r["text"], None) for r in records])
    counts = data.clean([source], data.DataConfig(min_chars=50))
    # the survivors, in order, are exactly the records marked keep (a duplicate's first occurrence
    # stays)
    assert [t for t, _ in source.docs] == [
        data.normalize(r["text"]) for r in records if r["expect"] == "keep"
    ]
    assert counts["fx"]["exact_dup"] == sum(r["expect"] == "exact_dup" for r in records) == 2
    assert counts["fx"]["near_dup"] == sum(r["expect"] == "near_dup" for r in records) == 2


def test_near_duplicates_against_exact_jaccard():
    """MinHash/LSH gives exactly the greedy answer of exact word 5-gram Jaccard on a family of
    random edits: a document is dropped iff it is >= 0.8 similar to an earlier kept one."""
    rng = np.random.default_rng(1)
    base = default_corpus()["en"][5].split()[:200]
    texts = [" ".join(base)]
    for k in range(40):
        w = list(base)
        for i in rng.choice(len(w), size=int(rng.integers(1, 9)), replace=False):
            w[i] = f"edit{k}_{i}"
        texts.append(" ".join(w))
    sets = [data.shingles(t) for t in texts]
    expected, kept = set(), []
    for i, s in enumerate(sets):
        if any(len(s & sets[j]) / len(s | sets[j]) >= 0.8 for j in kept):
            expected.add(i)
        else:
            kept.append(i)
    assert 5 < len(expected) < 35  # the family straddles the threshold
    assert data.near_duplicates(texts, 0.8) == expected


def test_repetition_and_length_filters_count_what_they_drop():
    good = default_corpus()["en"][3]
    spam = "\n".join(["Buy now, best price!"] * 20 + ["contact us"])
    ngram_spam = " ".join(["the quick brown fox jumps"] * 60)
    source = Source(
        "s", "en", [(good, None), (spam, None), (ngram_spam, None), ("too short", None)]
    )
    counts = data.clean([source], data.DataConfig())
    assert [t for t, _ in source.docs] == [data.normalize(good)]
    assert counts["s"]["repetitive"] == 2 and counts["s"]["too_short"] == 1
    assert data.dup_line_frac(spam) == pytest.approx(19 / 21)


# ----------------------------------------------------------------------------- reading, mixture,
# upsampling
def test_readers_txt_jsonl_code_folders_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\nsecond doc\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(
        '{"text": "영어 아닌 문서", "lang": "ko"}\n\n{"text": "plain"}\n', encoding="utf-8"
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.py").write_text("x = 1\n\n\ny = 2\n", encoding="utf-8")
    (tmp_path / "sub" / "skip.bin").write_bytes(b"\xff\xfe")
    [s] = read_sources([f"mine:en:{tmp_path}"])
    assert s.docs == [
        ("first doc\nline two", None),
        ("second doc\n", None),
        ("영어 아닌 문서", "ko"),
        ("plain", None),
        ("x = 1\n\n\ny = 2\n", None),
    ]
    [g] = read_sources([f"g:code:{tmp_path}/**/*.py"])
    assert g.docs == [("x = 1\n\n\ny = 2\n", None)]
    # two sources of one name would share a row of the counts; a group names a file
    with pytest.raises(data.DataError, match="'web' is taken"):
        read_sources([f"web:en:{tmp_path}/a.txt", f"web:ko:{tmp_path}/b.jsonl"])
    with pytest.raises(data.DataError, match="group 'en/us'"):
        read_sources([f"web:en/us:{tmp_path}/a.txt"])


def test_mix_hits_weights_and_upsample_scales_a_source(tmp_path):
    rng = np.random.default_rng(0)
    pools = {"a": [(i, 10) for i in range(50)], "b": [(100 + i, 10) for i in range(400)]}
    chosen = data.mix(pools, {"a": 2, "b": 1}, 3000, rng)
    # a repeated 4x, b subsampled
    assert len(chosen["a"]) * 10 == 2000 and len(chosen["b"]) * 10 == 1000
    assert sorted(set(chosen["a"])) == list(range(50)) and len(set(chosen["b"])) == 100
    # upsampling: within the ko group, ko_law's share of tokens grows ~3x relative to ko_debian_faq
    tok = ByteTokenizer()
    common = dict(
        source=[
            f"law:ko:{CORPUS_DIR}/ko_law.jsonl",
            f"faq:ko:{CORPUS_DIR}/ko_debian_faq.jsonl",
            f"en:en:{CORPUS_DIR}/en_debian_faq.jsonl",
        ],
        mix="ko=1,en=1",
        fim_rate=0.0,
        val_fraction=0.0,
    )
    plain = data.build(data.DataConfig(out_dir=str(tmp_path / "p"), **common), tok)["sources"]
    up = data.build(data.DataConfig(out_dir=str(tmp_path / "u"), upsample="law=3", **common), tok)[
        "sources"
    ]
    ratio = (up["law"]["train_tokens"] / up["faq"]["train_tokens"]) / (
        plain["law"]["train_tokens"] / plain["faq"]["train_tokens"]
    )
    assert 2.4 < ratio < 3.6, ratio


# ----------------------------------------------------------------------------- bad input
def existing_good_output(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.bin").write_bytes(b"good")
    return out


def assert_untouched(tmp_path, out):
    assert (out / "train.bin").read_bytes() == b"good" and sorted(os.listdir(out)) == ["train.bin"]
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporary folder left behind


def test_missing_path_names_it_and_writes_nothing(tmp_path):
    out = existing_good_output(tmp_path)
    with pytest.raises(SystemExit, match=r"nope/missing\.txt: no such file"):
        data.main(["--out-dir", str(out), "--source", f"x:en:{tmp_path}/nope/missing.txt"])
    assert_untouched(tmp_path, out)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    out = existing_good_output(tmp_path)
    bad = os.path.join(FIX, "bad.jsonl")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:3: not valid JSON .*pass --skip-bad"):
        data.main(["--out-dir", str(out), "--source", f"x:en:{bad}"])
    assert_untouched(tmp_path, out)
    cfg = data.DataConfig(
        out_dir=str(out),
        source=[f"x:en:{bad}"],
        mix="en=1",
        skip_bad=True,
        min_chars=5,
        val_fraction=0,
    )
    meta = data.build(cfg, ByteTokenizer())
    assert (
        meta["sources"]["x"]["filters"]["jsonl_skipped"] == 1
        and meta["sources"]["x"]["docs_kept"] == 3
    )
    assert meta["skipped_records"] == [f"{bad}:3: not valid JSON (Expecting value at column 1)"]
    # the printed summary says what was skipped, where
    assert f"skipped 1 malformed record(s) (--skip-bad): {bad}:3: not valid JSON" in data_summary(
        meta
    )


def test_empty_corpus_after_filtering_errors_and_keeps_old_output(tmp_path):
    out = existing_good_output(tmp_path)
    cfg = data.DataConfig(out_dir=str(out), source=[f"x:en:{FIX}/dedup.jsonl"], min_chars=10**6)
    with pytest.raises(data.DataError, match="no document left after filtering"):
        data.build(cfg, ByteTokenizer())
    assert_untouched(tmp_path, out)
    with pytest.raises(data.DataError, match="--mix 'ko=1' has no weight for group.* en"):
        data.build(
            data.DataConfig(out_dir=str(out), source=[f"x:en:{FIX}/dedup.jsonl"], mix="ko=1"),
            ByteTokenizer(),
        )
    with pytest.raises(data.DataError, match=r"--mix 'en=0,ko=1': the groups present \(en\)"):
        data.build(
            data.DataConfig(out_dir=str(out), source=[f"x:en:{FIX}/dedup.jsonl"], mix="en=0,ko=1"),
            ByteTokenizer(),
        )
    assert_untouched(tmp_path, out)


# ----------------------------------------------------------------------------- batches for
# pretraining
@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "train.bin"
    # token value == position: a window names its start
    np.arange(20_000, dtype=np.uint16).tofile(path)
    return str(path)


def test_batches_shift_and_shape(token_file):
    x, y = data.PretrainBatches(token_file, 4, seed=3).get(0, 32)
    assert x.shape == y.shape == (4, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 1)
    assert torch.equal(x, x[:, :1] + torch.arange(32))  # consecutive tokens of the file


def test_resume_mid_run_gives_exactly_the_uninterrupted_batches(token_file):
    """pretrain.py resumes from the step number alone: a fresh sampler with the same seed serves
    the uninterrupted run's batches from that step on."""
    full = data.PretrainBatches(token_file, 4, seed=7)
    seq = [full.get(step, 16 if step < 8 else 64) for step in range(12)]
    resumed = data.PretrainBatches(token_file, 4, seed=7)  # a fresh process, resuming at step 5
    for step in range(5, 12):
        x, y = resumed.get(step, 16 if step < 8 else 64)
        assert torch.equal(x, seq[step][0]) and torch.equal(y, seq[step][1])
    assert not torch.equal(seq[0][0], seq[1][0])  # steps differ
    # seeds differ
    assert not torch.equal(seq[0][0], data.PretrainBatches(token_file, 4, seed=8).get(0, 16)[0])


def test_ranks_get_disjoint_windows_and_match_one_big_batch(token_file):
    world, B, T = 4, 3, 50
    ranks = [
        data.PretrainBatches(token_file, B, seed=1, rank=r, world_size=world) for r in range(world)
    ]
    single = data.PretrainBatches(token_file, B * world, seed=1)
    for step in range(20):
        xs = [r.get(step, T)[0] for r in ranks]
        starts = torch.cat([x[:, 0] for x in xs]).sort().values
        # no two windows of a step share a token, across ranks too
        assert (starts.diff() >= T + 1).all()
        assert torch.equal(torch.cat(xs), single.get(step, T)[0])


def test_batches_errors_and_meta_dtype(tmp_path, token_file):
    with pytest.raises(ValueError, match="train.bin: 20,000 tokens hold .* a step needs 100"):
        data.PretrainBatches(token_file, 100, world_size=1).get(0, 400)
    small = tmp_path / "small" / "train.bin"
    small.parent.mkdir()
    np.arange(1000, dtype=np.uint32).tofile(small)
    (small.parent / "meta.json").write_text(json.dumps({"dtype": "uint32"}))
    b = data.PretrainBatches(str(small), 2)
    assert len(b.data) == 1000 and b.get(0, 10)[0].max() < 1000


def test_val_batches_are_fixed_consecutive_windows(token_file):
    everything = list(data.val_batches(token_file, 64, 100))
    x = torch.cat([b[0] for b in everything])
    # window i starts at i*T: every token predicted once
    assert torch.equal(x[:, 0], torch.arange((20_000 - 1) // 100) * 100)
    assert torch.equal(everything[0][1][0], torch.arange(1, 101))
    batches = list(data.val_batches(token_file, 4, 100, max_batches=3))
    assert len(batches) == 3 and all(x.shape == (4, 100) for x, _ in batches)
    # 12 of the 199 windows, spread from the first to the last (val.bin's groups lie in a row)
    starts = torch.cat([b[0] for b in batches])[:, 0]
    assert starts[0] == 0 and starts[-1] == 198 * 100 and (starts % 100 == 0).all()
    assert (starts[1:] - starts[:-1]).tolist() == [1800] * 11
    again = list(data.val_batches(token_file, 4, 100, max_batches=3))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again))
    for x, y in batches:  # y is x shifted by one token
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)


def test_context_length_schedule():
    lens = [data.context_length_at(s, 100, 128, 512) for s in range(100)]
    assert lens == [128] * 90 + [512] * 10
    assert [data.context_length_at(s, 5, 64, 256) for s in range(5)] == [64] * 4 + [256]
    assert {data.context_length_at(s, 50, 64, 256, long_fraction=0.0) for s in range(50)} == {64}
    with pytest.raises(ValueError):
        data.context_length_at(0, 10, 64, 256, long_fraction=1.5)


@pytest.mark.parametrize("bad", ["en=-1", "en=lots", "en=nan", "en"])
def test_mix_weights_must_be_numbers_at_least_zero(bad):
    """--mix / --upsample: NAME=NUMBER pairs, numbers >= 0; anything else names the flag and item
    (a plain `if`, so `python -O` keeps the check)."""
    assert parse_weights("ko=2, en=0.5,", "--mix") == {"ko": 2.0, "en": 0.5}
    with pytest.raises(data.DataError, match=f"--upsample 'ko=1,{bad}'.*got '{bad}'"):
        parse_weights(f"ko=1,{bad}", "--upsample")


def test_everything_held_out_says_the_training_split_is_empty_and_writes_nothing(tmp_path):
    """--val-fraction 1 leaves no training document: the error says so (not a mixture-weight
    complaint about no groups) before any tokenizer is loaded, and the old output stays."""
    out = existing_good_output(tmp_path)
    docs = os.path.join(FIX, "dedup.jsonl")
    with pytest.raises(SystemExit, match="the training split is empty.*--val-fraction"):
        data.main(
            [
                "--out-dir",
                str(out),
                "--source",
                f"x:en:{docs}",
                "--mix",
                "en=1",
                "--val-fraction",
                "1",
                "--min-chars",
                "5",
                "--tokenizer",
                "no/such.model",
            ]
        )
    assert_untouched(tmp_path, out)


@pytest.mark.parametrize(
    "flags, complaint",
    [
        (["--fim-split", "bogus"], "--fim-split 'bogus': use thirds or random"),
        (["--max-tokens", "-5"], r"--max-tokens -5: use 0 \(as many as the corpus has\) or more"),
    ],
)
def test_bad_build_flags_are_named_and_write_nothing(tmp_path, flags, complaint):
    out = existing_good_output(tmp_path)
    docs = os.path.join(FIX, "dedup.jsonl")
    with pytest.raises(SystemExit, match=complaint):
        data.main(["--out-dir", str(out), "--source", f"x:en:{docs}", "--mix", "en=1"] + flags)
    assert_untouched(tmp_path, out)


def test_corpus_cli_lists_the_sources_and_answers_help(capsys):
    import corpus

    with pytest.raises(SystemExit) as stop:
        corpus.main(["--help"])
    assert stop.value.code == 0 and "the embedded default corpus" in capsys.readouterr().out
    corpus.main([])
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(corpus.default_sources()) and "ko_law" in listed[0]
