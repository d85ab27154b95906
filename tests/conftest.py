"""Shared fixtures: tiny files written per test, the real corpora when present, and a
tiny locally built causal LM for the model tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPORA = ROOT.parent / "shared" / "corpora"
DATA = ROOT / "data"


def corpora_path(*parts: str) -> Path:
    """A file of ../shared/corpora, or skip the test with the reason."""
    path = CORPORA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real corpora not found at {CORPORA} (they live in ../shared/corpora)")
    return path


def write_jsonl(path: Path, records: list, compress: str | None = None) -> Path:
    data = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()
    if compress == "gzip":
        path.write_bytes(gzip.compress(data))
    elif compress == "zstd":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def single(question: str, answer: str) -> list[dict]:
    """A one-turn chat conversation."""
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@pytest.fixture
def store(tmp_path):
    from curate.store import Store

    return Store(tmp_path / "store")


def rows(store, sql: str) -> list[tuple]:
    con = store.connect()
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine
    their spin-waits made the model tests 3-4x slower. Modules opt in with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged SmolLM2 tokenizer (its chat template included)."""
    from transformers import AutoTokenizer

    from curate.models import resolve

    return AutoTokenizer.from_pretrained(str(resolve("smollm2-135m", "causal-lm")))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, tokenizer) -> str:
    """A 2-layer Llama with the SmolLM2 tokenizer: a valid `model` folder for training
    and scoring, built in a second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512,
                         initializer_range=0.1)  # wide enough that LoRA can steer the frozen head
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
