"""Decontamination: drop the pool rows that overlap an evaluation set, before anyone
trains on them (Tulu 3 / open-instruct practice; datatrove and NeMo Curator have it).

    ngram      a row is contaminated when it shares a word n-gram (13 words by default,
               normalized: lowercase, punctuation removed, whitespace words; see
               `curate.ngrams`) with a target example; `threshold` asks for at least
               that fraction of the target example's n-grams instead of any one
    embedding  a row is contaminated when its cosine to a target example is at or
               above `threshold` (0.9), with the store's embeddings (`curate score
               embed`) and the target embedded the same way

The target is anything `curate evaluate` reads: a selection, `source:NAME`, or a file of
any ingest format (ingested into a side store; its ids are content hashes, as in the
store). Each dropped row records the target example it matched (`duplicate_of`) and how
much (`similarity`: the fraction of that example's n-grams the row shares, or the
cosine), so `selection_dropped` shows what matched. `selection_overlap` is the same
n-gram check for a training selection, behind the warnings of evaluate and compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector, take_in_order
from curate.selectors.pool import Pool

BY = ("ngram", "embedding")
NGRAM = 13
EMBEDDING_THRESHOLD = 0.9


class Decontaminator(Selector):
    """Keeps the pool rows that do not overlap `against` (a selection, `source:NAME`
    or a file), in pool order, up to an optional budget; `by` is `ngram` (any shared
    `ngram`-word n-gram, or at least `threshold` of a target example's n-grams) or
    `embedding` (cosine >= `threshold`, 0.9 by default). `text` is what is compared on
    both sides: `all` turns, `prompt` or `response`. Sets `dropped_` like the
    deduplicators, so it is also a recipe dedup step."""

    name = "decontaminate"
    budget_required = False
    deduplicates = True

    def __init__(self, against: str | None = None, by: str = "ngram", ngram: int = NGRAM,
                 threshold: float | None = None, text: str = "all",
                 budget: Budget | str | None = None):
        self.against = against
        self.by = by
        self.ngram = ngram
        self.threshold = threshold
        self.text = text
        self.budget = budget

    def fit(self, pool: Pool) -> "Decontaminator":
        from curate.chat import render_text
        from curate.scoring.base import TEXTS
        from curate.targets import load_target

        if not self.against:
            raise CurateError("decontaminate needs the evaluation set to clean against\n"
                              "  fix: pass --against (a file such as gsm8k_test.jsonl, a "
                              "selection, or source:NAME)")
        if self.by not in BY:
            raise CurateError(f"decontaminate: unknown method {self.by!r}\n  fix: use "
                              f"{' or '.join(BY)}")
        if self.text not in TEXTS:
            raise CurateError(f"decontaminate text {self.text!r}\n  fix: use one of "
                              f"{', '.join(TEXTS)}")
        if self.by == "ngram" and (int(self.ngram) < 1 or self.threshold is not None and
                                   not 0 <= float(self.threshold) <= 1):
            raise CurateError(f"decontaminate: ngram {self.ngram} must be >= 1 and threshold "
                              f"{self.threshold} a fraction of a target example's n-grams in "
                              "[0, 1]\n  fix: e.g. --ngram 13 (any shared 13-gram), or "
                              "--ngram 8 --threshold 0.5")
        if self.by == "embedding" and self.threshold is not None and \
                not -1 <= float(self.threshold) <= 1:
            raise CurateError(f"decontaminate: threshold {self.threshold} is not a cosine "
                              "similarity\n  fix: give one in [-1, 1], e.g. 0.9")
        costs = limit = None
        if self.budget is not None:
            costs, limit = Budget.parse(self.budget).resolve(pool)
        if self.by == "ngram":
            from curate.ngrams import ngrams, shared_ngrams

            target = load_target(pool.store, self.against)
            target_ids = target.ids
            n = int(self.ngram)
            found = shared_ngrams(ngrams(pool.example_texts(self.text), n),
                                  ngrams([render_text(m, self.text) for m in target.messages],
                                         n))
            hit = found.matched(None if self.threshold is None else float(self.threshold))
            match, similarity = found.target, found.fraction
            least = f" (at least {float(self.threshold):g} of an example's)" \
                if self.threshold else ""
            how = f"kept: no {n}-gram{least} shared with {self.against}"
        else:
            import faiss

            threshold = EMBEDDING_THRESHOLD if self.threshold is None else float(self.threshold)
            X = pool.embeddings()
            target_ids, T = pool.target_vectors(self.against)
            index = faiss.IndexFlatIP(T.shape[1])
            index.add(np.ascontiguousarray(T, np.float32))
            sims, nearest = index.search(np.ascontiguousarray(X, np.float32), 1)
            similarity, match = sims[:, 0].astype(np.float64), nearest[:, 0].astype(np.int64)
            hit = similarity >= threshold
            how = f"kept: cosine below {threshold:g} to every example of {self.against}"
        order = np.flatnonzero(~hit)
        if costs is not None:
            order = take_in_order(order, costs, limit)
        dropped = np.flatnonzero(hit)
        tids = np.asarray(target_ids, dtype=object)
        self.dropped_ = pa.table({
            "id": pa.array(pool.ids[dropped].tolist(), pa.string()),
            "duplicate_of": pa.array(tids[match[dropped]].tolist(), pa.string()),
            "similarity": pa.array(similarity[dropped], pa.float32())})
        self.target_ids_ = list(target_ids)
        return self._selected(pool, order, np.zeros(len(order)), [how] * len(order))


# ------------------------------------------------------------------ training selections


@dataclass(frozen=True)
class Overlap:
    """How a training selection overlaps a target: `same_ids` of its `examples` are
    target examples (the same content hash), `ngram_rows` share an `ngram`-word n-gram
    with one (those included)."""

    selection: str
    target: str
    examples: int
    same_ids: int
    ngram_rows: int
    ngram: int = NGRAM

    def __bool__(self) -> bool:
        return bool(self.same_ids or self.ngram_rows)

    def message(self, what: str = "") -> str:
        """One warning line with the counts, then the fix."""
        parts = []
        if self.same_ids:
            parts.append(f"{self.same_ids} of its {self.examples} examples are target examples")
        if self.ngram_rows:
            parts.append(f"{self.ngram_rows} of its {self.examples} examples share a "
                         f"{self.ngram}-word n-gram with one")
        against = _quote(self.target)
        return (f"training selection {self.selection!r}{what} overlaps target {self.target}: "
                f"{', and '.join(parts)}: the evaluation is contaminated\n  fix: curate "
                f"decontaminate --against {against} --selection {self.selection} --name "
                f"{self.selection}-clean, then train on {self.selection}-clean")


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def selection_overlap(store, selection: str, target, ngram: int = NGRAM) -> Overlap:
    """How selection `selection` overlaps `target` (a `curate.targets.Target`): shared
    ids and rows sharing an n-gram of every turn's text (the check `curate evaluate` and
    `curate compare` warn with)."""
    from curate.chat import render_text
    from curate.ngrams import ngrams, shared_ngrams
    from curate.scoring.base import TEXTS

    con = store.connect()
    try:
        t = con.sql(f"SELECT e.id, coalesce({TEXTS['all']}, '') AS text FROM examples e "
                    "JOIN selection_members s USING (id) WHERE s.selection = ? ORDER BY s.rank",
                    params=[selection]).to_arrow_table()
    finally:
        con.close()
    ids = t["id"].to_pylist()
    same = len(set(ids).intersection(target.ids))
    found = shared_ngrams(ngrams(t["text"], ngram),
                          ngrams([render_text(m, "all") for m in target.messages], ngram))
    return Overlap(selection, target.name, len(ids), same, int(found.matched().sum()), ngram)


def describe_matches(store, selection, against: str, limit: int = 3) -> list[dict]:
    """A few of a decontaminated selection's dropped rows, most similar first: pool id,
    the target example it matched, the similarity, for an n-gram match the first shared
    n-gram, and the start of the row's prompt."""
    from curate.chat import render_text
    from curate.ngrams import first_shared
    from curate.scoring.base import TEXTS
    from curate.targets import load_target

    d = selection.dropped
    if d is None or not d.num_rows:
        return []
    top = np.argsort(-np.nan_to_num(d["similarity"].to_numpy(zero_copy_only=False)),
                     kind="stable")[:limit]
    rows = [{k: d[k][int(i)].as_py() for k in ("id", "duplicate_of", "similarity")}
            for i in top]
    params = selection.params
    step = next((s["dedup"] for s in params.get("steps", []) if isinstance(s, dict) and
                 s.get("dedup", {}).get("method") == Decontaminator.name), params)
    by, n, text = step.get("by", "ngram"), int(step.get("ngram") or NGRAM), \
        step.get("text", "all")
    con = store.connect()
    try:
        found = {i: (t, p) for i, t, p in con.execute(
            f"SELECT id, coalesce({TEXTS[text]}, ''), coalesce({TEXTS['prompt']}, '') FROM "
            "examples WHERE list_contains(?, id)", [[r["id"] for r in rows]]).fetchall()}
    finally:
        con.close()
    target = load_target(store, against)
    messages = dict(zip(target.ids, target.messages))
    for r in rows:
        mine, prompt = found.get(r["id"], ("", ""))
        theirs = render_text(messages[r["duplicate_of"]], text) \
            if r["duplicate_of"] in messages else ""
        r["ngram"] = first_shared(mine, theirs, n) if by == "ngram" else None
        r["prompt"] = " ".join(prompt.split())[:120]
    return rows
