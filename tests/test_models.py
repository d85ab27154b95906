"""The packaged models, really loaded (each once per session), on a few real rows."""

import time

import numpy as np
import pytest

from conftest import corpora_path
from curate import models
from curate.errors import CurateError


def _gsm8k(n):
    import json

    with open(corpora_path("gsm8k", "train.jsonl")) as f:
        return [json.loads(next(f)) for _ in range(n)]


@pytest.mark.slow
def test_minilm_embeds_real_rows():
    model = models.load_embedder("minilm")
    questions = [r["question"] for r in _gsm8k(4)]
    vectors = model.encode(questions + questions[:1], normalize_embeddings=True)
    assert vectors.shape == (5, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert np.allclose(vectors[0], vectors[4], atol=1e-6)  # an exact duplicate embeds alike
    assert float(vectors[0] @ vectors[1]) < 0.99


@pytest.mark.slow
def test_smollm2_converted_once_then_loads_fast():
    import torch

    path = models.resolve("smollm2-135m")  # converts on the first call of a machine
    started = time.time()
    assert models.resolve("smollm2-135m") == path and time.time() - started < 5
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    model, tok = models.load_causal_lm("smollm2-135m")
    row = _gsm8k(1)[0]

    def loss(messages):
        ids = tok.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            return float(model(ids, labels=ids).loss)

    # sanity: the model finds a worked answer likelier after its own question
    with_q = loss([{"role": "user", "content": row["question"]},
                   {"role": "assistant", "content": row["answer"]}])
    shuffled = loss([{"role": "user", "content": row["answer"]},
                     {"role": "assistant", "content": row["question"]}])
    assert np.isfinite(with_q) and with_q < shuffled


def test_unknown_and_hub_names_fail_with_the_valid_ones(tmp_path):
    with pytest.raises(CurateError, match="minilm") as e:
        models.resolve("sentence-transformers/all-mpnet-base-v2")
    assert "local Hugging Face folder" in str(e.value)
    with pytest.raises(CurateError, match="not a causal-lm model"):
        models.resolve("minilm", kind="causal-lm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CurateError, match="no config.json"):
        models.resolve(str(tmp_path / "empty"))


def test_registry_listing():
    names = {r["name"]: r for r in models.describe()}
    assert names["minilm"]["installed"] and names["minilm"]["kind"] == "embedding"
    assert names["smollm2-135m"]["kind"] == "causal-lm"


def test_device_choice():
    import torch

    assert models.device() == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(CurateError, match="no GPU"):
            models.device("cuda")
