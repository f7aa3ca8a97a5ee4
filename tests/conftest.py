"""Shared test fixtures: a small real tokenizer (fixture corpus + task-world text), trained once per
session."""

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory):
    """A 1200-piece morpheme-aware tokenizer trained on tests/fixtures/tokenizer and the task
    world's text."""
    from tasks import pretrain_documents
    from tokenizer import Tokenizer, train_tokenizer

    corpus = {}
    for lang in ("ko", "en", "code"):
        with open(
            os.path.join(ROOT, "tests", "fixtures", "tokenizer", f"{lang}.jsonl"), encoding="utf-8"
        ) as fh:
            corpus[lang] = [json.loads(line)["text"] for line in fh]
    corpus["tasks"] = pretrain_documents(seed=0)
    path = train_tokenizer(corpus, str(tmp_path_factory.mktemp("tok")), vocab_size=1200)
    return Tokenizer(path)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a shared 2-core machine the threads of
    several processes spin against each other (10x slower). Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`; the thread count is restored
    afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def report_numbers(obj, path="report"):
    """Every number in a JSON-like report, with its path (report.win_rates.dpo.first): tests check
    them all."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from report_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from report_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def logits_read_at(logits, last_only=False):
    """What a stub model returns for Transformer.forward's last_only: every position (False), the
    last one (True), or one position per row (a (B,) tensor), each (B, T or 1, V)."""
    import torch

    if torch.is_tensor(last_only):
        return logits[torch.arange(len(logits)), last_only].unsqueeze(1)
    return logits[:, -1:] if last_only else logits
