"""The candidate pool: the rows a selector chooses from, with lazy access to their score
columns, embeddings and token counts (see `Pool`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.chat import render_text
from curate.errors import CurateError

_META_COLUMNS = {"id", "reason", "scorer", "scorer_version", "model", "params", "config"}
BASE_COLUMNS = ("id", "source", "source_row", "kind", "prompt", "response", "turns",
                "success", "reward")


class Pool:
    """The candidates a selector chooses from: ids in a fixed order (by id), plus lazy
    access to score expressions, embeddings and token counts for exactly these rows.

    Score columns of every `scores_<scorer>` view are addressable by name in SQL
    expressions (`ifd`, `nll`, `response_chars`, ...); a name two scorers share is
    `<scorer>_<name>` (`lm_prompt_tokens`, `heuristics_prompt_tokens`). Recipe steps
    narrow a pool with `subset`, which shares the loaded columns instead of re-querying.
    """

    def __init__(self, store, where: str | None = None, embed_config: str | None = None):
        from curate.store import score_views

        self.store = store.require()
        self.where = where
        self.embed_config = embed_config
        self._views = score_views(store.root)
        self._con = store.connect()
        self._columns = self._score_columns()
        self._cache: dict[str, np.ndarray] = {}  # columns over the root pool's rows
        if where:
            from curate.safety import check_expression

            check_expression(where, "the --where filter")
        sql = f"SELECT id FROM ({self.relation()})" + (f" WHERE ({where})" if where else "")
        ids = self._query(sql + " ORDER BY id", "the --where filter")["id"]
        self._root_ids = np.asarray(ids.to_pylist(), dtype=object)
        self.rows = np.arange(len(self._root_ids))  # this pool's rows of the root pool

    @property
    def start_size(self) -> int:
        """Size of the pool before any recipe step narrowed it: fractions refer to it."""
        return len(self._root_ids)

    @property
    def ids(self) -> np.ndarray:
        return self._root_ids[self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, keep: np.ndarray) -> "Pool":
        """The pool of the rows where `keep` (a mask over this pool) is true."""
        sub = object.__new__(type(self))
        sub.__dict__.update(self.__dict__)
        sub.rows = self.rows[np.asarray(keep, bool)]
        return sub

    # -- SQL over pairs + scores
    def _score_columns(self) -> dict[str, list[tuple[str, str]]]:
        """Expression name -> the (view, column) pairs it reads. Every scalar score
        column is `<scorer>_<column>`; its bare name (unless pairs has it) reads the
        first scorer that has a value, the lm scorer first (the model's tokenizer and
        template), then by scorer name. Running another scorer never takes a name away."""
        out: dict[str, list[tuple[str, str]]] = {}
        bare: dict[str, list[tuple[str, str]]] = {}
        for view in sorted(self._views, key=lambda v: (v != "scores_lm", v)):
            scorer = view.removeprefix("scores_")
            for name, dtype, *_ in self._con.execute(f"DESCRIBE {view}").fetchall():
                if name in _META_COLUMNS or "[" in dtype or dtype.startswith("STRUCT"):
                    continue
                out[f"{scorer}_{name}"] = [(view, name)]
                if name not in BASE_COLUMNS:
                    bare.setdefault(name, []).append((view, name))
        return {**bare, **out}

    def relation(self) -> str:
        """SQL of pairs joined with every scalar score column."""
        cols = ""
        for alias, sources in self._columns.items():
            refs = [f"{view.removeprefix('scores_')}.{col}" for view, col in sources]
            expr = refs[0] if len(refs) == 1 else f"coalesce({', '.join(refs)})"
            cols += f", {expr} AS {alias}"
        used = {v for srcs in self._columns.values() for v, _ in srcs}
        joins = "".join(f" LEFT JOIN {v} AS {v.removeprefix('scores_')} USING (id)"
                        for v in self._views if v in used)
        return f"SELECT p.*{cols} FROM pairs p{joins}"

    def columns(self) -> list[str]:
        return [*BASE_COLUMNS, *self._columns]

    def higher_is_better(self, expr: str) -> bool | None:
        """The direction the scorer declared for the score column `expr` (`ppl`: False,
        `ifd`: True); None for an expression, or a column whose scorers declare none or
        disagree."""
        declared = set()
        for view, column in self._columns.get(expr.strip(), []):
            config = self._views[view] / "config.json"
            try:
                declared.add(json.loads(config.read_text()).get("higher_is_better", {})
                             .get(column))
            except (OSError, ValueError):
                declared.add(None)
        return declared.pop() if len(declared) == 1 else None

    def better(self, expr: str, what: str = "score") -> np.ndarray:
        """`values(expr)` turned so that higher is better: negated for a score column
        its scorer declares lower-better (quality `ppl` prefers low perplexity)."""
        values = self.values(expr, what)
        return -values if self.higher_is_better(expr) is False else values

    def ascending(self, expr: str, given: bool | None) -> bool:
        """Rank `expr` lowest first? As given, else as its scorer declared (a score
        where lower is better, such as `ppl`, goes lowest first), else highest first."""
        if given is not None:
            return bool(given)
        return self.higher_is_better(expr) is False

    def _query(self, sql: str, what: str) -> pa.Table:
        import duckdb

        try:
            return self._con.sql(sql).to_arrow_table()
        except duckdb.Error as e:
            raise CurateError(f"{what} failed: {_short(e)}\n  {self._hint(str(e))}") from e

    def _hint(self, message: str) -> str:
        from curate.scoring import SCORERS

        for name in re.findall(r'column "?([A-Za-z_][A-Za-z0-9_]*)"? not found', message):
            for scorer, cls in SCORERS.items():
                cols = cls.__dict__.get("columns")
                if isinstance(cols, dict) and name in cols and f"scores_{scorer}" not in self._views:
                    return (f"fix: `{name}` comes from the {scorer} scorer, which has not run "
                            f"on this store: run `curate score {scorer}` first")
        return "fix: the columns are " + ", ".join(self.columns())

    def _column(self, key: str, sql: str, what: str, numeric: bool = True) -> np.ndarray:
        """Column `v` of `sql` (rows: id, v) over the root pool's ids, cached."""
        if key not in self._cache:
            if key.startswith(("expr:", "str:")):  # a user's expression: one, no `; ...`
                from curate.safety import check_expression

                check_expression(key.partition(":")[2], what)
            t = self._query(sql, what)
            index = dict(zip(t["id"].to_pylist(), range(t.num_rows)))
            rows = np.fromiter((index.get(i, -1) for i in self._root_ids), np.int64,
                               len(self._root_ids))
            if numeric:
                vals = t["v"].to_numpy(zero_copy_only=False).astype(np.float64)
                out = np.full(len(rows), np.nan)
            else:
                vals = np.asarray(t["v"].to_pylist(), dtype=object)
                out = np.full(len(rows), None, dtype=object)
            out[rows >= 0] = vals[rows[rows >= 0]]
            self._cache[key] = out
        return self._cache[key][self.rows]

    def values(self, expr: str, what: str = "score") -> np.ndarray:
        """A SQL expression over pairs + score columns, per pool row (float64, NaN=null)."""
        return self._column(f"expr:{expr}", f"SELECT id, CAST(({expr}) AS DOUBLE) AS v "
                            f"FROM ({self.relation()})", f"the {what} `{expr}`")

    def strings(self, expr: str, what: str = "text") -> np.ndarray:
        """A text-valued SQL expression per pool row (object array, None for null)."""
        return self._column(f"str:{expr}", f"SELECT id, CAST(({expr}) AS VARCHAR) AS v "
                            f"FROM ({self.relation()})", f"the {what} `{expr}`", numeric=False)

    def example_texts(self, which: str) -> np.ndarray:
        """The text a scorer reads (`prompt`, `response` or `all` turns) per pool row."""
        from curate.scoring.base import TEXTS

        return self._column(f"text:{which}", f"SELECT id, coalesce({TEXTS[which]}, '') AS v "
                            "FROM examples", f"{which} text", numeric=False)

    def embeddings(self) -> np.ndarray:
        """L2-normalized vectors (n x d float32) from the embed scorer."""
        if "embeddings" not in self._cache:
            from curate.scoring.embed import load_vectors

            folder = self._embed_folder()
            ids, vectors = load_vectors(folder)
            index = dict(zip(ids, range(len(ids))))
            rows = np.fromiter((index.get(i, -1) for i in self._root_ids), np.int64,
                               len(self._root_ids))
            if (rows < 0).any():
                raise CurateError(
                    f"{int((rows < 0).sum())} of {len(rows)} pool examples have no embedding "
                    f"in {folder}\n  fix: run `curate score embed` again (it scores only what "
                    "is missing), or leave empty texts out with --where")
            self._cache["embeddings"] = vectors[rows]
        return self._cache["embeddings"][self.rows]

    def target_embeddings(self, target: str) -> np.ndarray:
        """L2-normalized vectors of a target's examples (a selection, `source:NAME` or a
        file, as `curate evaluate` reads them) in the pool's embedding space: stored
        vectors where the store has them, the embed scorer's model and text otherwise."""
        return self.target_vectors(target)[1]

    def target_vectors(self, target: str) -> tuple[list[str], np.ndarray]:
        """The target's example ids and their vectors (`target_embeddings`), examples
        with no text to embed left out of both."""
        import json

        from curate.scoring.embed import EmbedScorer, load_vectors
        from curate.targets import load_target

        folder = self._embed_folder()
        tgt = load_target(self.store, target)
        ids, vectors = load_vectors(folder, only=tgt.ids)
        index = dict(zip(ids, range(len(ids))))
        have = [index.get(i, -1) for i in tgt.ids]
        missing = [j for j, r in enumerate(have) if r < 0]
        out = np.zeros((len(tgt.ids), vectors.shape[1] if len(ids) else 0), np.float32)
        for j, r in enumerate(have):
            if r >= 0:
                out[j] = vectors[r]
        if missing:
            config = json.loads((folder / "config.json").read_text())
            scorer = EmbedScorer(model=config["model"], text=config["params"]["text"])
            texts = [render_text(tgt.messages[j], scorer.needs) for j in missing]
            embedded = scorer._encoder().encode(texts, normalize_embeddings=True,
                                                batch_size=scorer.batch_size)
            out = out if out.shape[1] else np.zeros((len(tgt.ids), embedded.shape[1]),
                                                    np.float32)
            out[missing] = embedded
        keep = np.linalg.norm(out, axis=1) > 0  # empty texts have no direction
        if not keep.any():
            raise CurateError(f"target {target!r} has no text to embed")
        return [i for i, k in zip(tgt.ids, keep) if k], out[keep]

    def _embed_folder(self) -> Path:
        root = self.store.folder("scores") / "embed"
        if self.embed_config:
            folder = root / self.embed_config
            if (folder / "config.json").is_file():
                return folder
            by_model = _embed_by_model(root, self.embed_config)
            if by_model is not None:
                return by_model
            have = sorted(p.parent.name for p in root.glob("*/config.json"))
            raise CurateError(
                f"no embed configuration {self.embed_config!r}\n  fix: use one of "
                f"{', '.join(have) or '(none: run `curate score embed`)'}, a model name one "
                "was made with (minilm), or lm (the newest made with a causal LM: `curate "
                "score embed --model smollm2-135m`)")
        if "scores_embed" not in self._views:
            raise CurateError("this method needs embeddings and the store has none\n"
                              "  fix: run `curate score embed` first")
        return self._views["scores_embed"]

    def tokens(self) -> np.ndarray:
        """Tokens per example for token budgets: the whole templated conversation, from
        the lm scorer (prompt + response) where it scored the row, else the heuristics
        scorer's `total_tokens`."""
        have = [s for s in ("lm", "heuristics") if f"scores_{s}" in self._views]
        if not have:
            raise CurateError("a token budget needs token counts and the store has none\n"
                              "  fix: run `curate score lm` (or the faster "
                              "`curate score heuristics`) first")
        counts = [f"{s}_total_tokens" if f"{s}_total_tokens" in self._columns
                  else f"{s}_prompt_tokens + {s}_response_tokens" for s in have]
        expr = "coalesce(" + ", ".join(counts) + ")"
        t = self.values(expr, "token count")
        if np.isnan(t).any():
            raise CurateError(
                f"{int(np.isnan(t).sum())} of {len(t)} pool examples have no token count "
                f"(not scored yet, or skipped by the scorer)\n  fix: run `curate score "
                f"heuristics` again (it scores only what is missing), or narrow the pool "
                f"with --where \"response_tokens IS NOT NULL\"")
        return np.maximum(t, 1.0)

    def sources(self) -> np.ndarray:
        return self.strings("source", "source")

    def fingerprint(self) -> str:
        """Content hash of the starting pool (before any recipe step narrowed it): its
        ids and the score configurations behind them."""
        import xxhash

        h = xxhash.xxh3_128()
        h.update("\n".join(self._root_ids).encode())
        h.update(json.dumps(sorted(f.name for f in self._views.values())).encode())
        return h.hexdigest()

    def close(self) -> None:
        self._con.close()


def _embed_by_model(root: Path, name: str) -> Path | None:
    """The newest embed configuration made with model `name`, or with any causal LM
    when `name` is `lm`."""
    from curate.models import kind_of

    def made_with(config: Path) -> bool:
        model = json.loads(config.read_text()).get("model")
        if name == "lm":
            try:
                return model is not None and kind_of(model) == "causal-lm"
            except CurateError:
                return False
        return model == name

    found = [c for c in root.glob("*/config.json") if made_with(c)]
    return max(found, key=lambda c: c.stat().st_mtime).parent if found else None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:400]
