"""Sentence embeddings (L2-normalized float32) of the prompt, the response or the whole
conversation, stored with the ids, plus a FAISS index beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.scoring.base import TEXTS, Scorer
from curate.store import publish

EXACT_INDEX_MAX = 100_000  # above this many vectors the index is IVF (approximate)


class EmbedScorer(Scorer):
    """Sentence embeddings with a sentence-transformers model (MiniLM by default), or a
    causal LM's hidden states (`--model smollm2-135m`: position-weighted mean pooling of
    the last layer, as RDS+ embeds with the model to train)."""

    name = "embed"
    version = "1"
    model_kind = None  # either kind: checked in __init__
    higher_is_better = {}
    loaded = ("_model",)
    on_gpu = True

    def __init__(self, model: str | None = "minilm", text: str = "all", batch_size: int = 32,
                 device: str | None = None):
        from curate.models import check

        if text not in TEXTS:
            raise CurateError(f"unknown --text {text!r}\n  fix: use one of {', '.join(TEXTS)}")
        check(model or "minilm")  # a bad name fails before any work
        super().__init__(model=model or "minilm", batch_size=batch_size, device=device,
                         params={"text": text})
        self.needs = text
        self._model = None

    def _encoder(self):
        if self._model is None:
            from curate.models import load_embedder

            self._model = load_embedder(self.model, self.device)
        return self._model

    @property
    def columns(self) -> dict[str, pa.DataType]:  # type: ignore[override]
        from curate.models import embedding_dimension

        dim = (self._model.get_embedding_dimension() if self._model is not None
               else embedding_dimension(self.model))
        return {"embedding": pa.list_(pa.float32(), dim)}

    def score(self, batch: pa.Table) -> pa.Table:
        texts = batch["text"].to_pylist()
        keep = [i for i, t in enumerate(texts) if t and t.strip()]
        dim = self.columns["embedding"].list_size
        vectors = np.zeros((len(texts), dim), np.float32)
        if keep:
            vectors[keep] = self._encoder().encode(
                [texts[i] for i in keep], batch_size=self.batch_size, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
        valid = np.zeros(len(texts), bool)
        valid[keep] = True
        flat = pa.array(vectors.reshape(-1))
        emb = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~valid))
        reason = pa.array([None if v else "empty text" for v in valid], pa.string())
        return pa.Table.from_arrays([emb, reason], names=["embedding", "reason"])

    def finish(self, folder: Path) -> None:
        build_index(folder)

    def finished(self, folder: Path) -> bool:
        """The index covers every stored vector (rows without a reason have one)."""
        ids = folder / "index_ids.parquet"
        vectors = sum(pq.ParquetFile(p).read(columns=["reason"])["reason"].null_count
                      for p in folder.glob("part-*.parquet"))
        return vectors == (pq.ParquetFile(ids).metadata.num_rows if ids.is_file() else 0)


def load_vectors(folder: Path, only: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """Ids and vectors of every scored (non-empty) example of one embed configuration,
    or of the ids in `only` (read with a filter: the rest are never materialized)."""
    ids, chunks = [], []
    where = [("id", "in", list(only))] if only is not None else None
    for part in sorted(folder.glob("part-*.parquet")):
        t = pq.read_table(part, columns=["id", "embedding"], filters=where)
        t = t.filter(t["embedding"].is_valid())
        if t.num_rows:
            emb = t["embedding"].combine_chunks()
            chunks.append(emb.flatten().to_numpy().reshape(len(emb), emb.type.list_size))
            ids += t["id"].to_pylist()
    if not chunks:
        return [], np.zeros((0, 0), np.float32)
    return ids, np.ascontiguousarray(np.concatenate(chunks), dtype=np.float32)


def build_index(folder: Path) -> Path:
    """Inner-product FAISS index over the stored vectors: exact (flat) for small stores,
    IVF for large ones; saved as index.faiss with the row -> id map in index_ids.parquet."""
    import faiss

    ids, vectors = load_vectors(folder)
    if not ids:
        return folder / "index.faiss"
    n, dim = vectors.shape
    if n <= EXACT_INDEX_MAX:
        index = faiss.IndexFlatIP(dim)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist,
                                   faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(vectors[rng.choice(n, min(n, 256 * nlist), replace=False)])
        index.nprobe = 16
    index.add(vectors)
    tmp = folder / ".index.faiss.tmp"
    faiss.write_index(index, str(tmp))
    pq.write_table(pa.table({"id": ids}), folder / ".index_ids.parquet.tmp")
    publish(folder / ".index_ids.parquet.tmp", folder / "index_ids.parquet")
    publish(tmp, folder / "index.faiss")
    return folder / "index.faiss"
