"""Build the HTML run report of a store: one self-contained page (inline CSS, inline SVG
and PNG data-URI figures, no script, nothing fetched) that opens offline in any browser.

Every section reads the catalog views and says plainly when its tables are empty, so a
store with only ingested rows renders too.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

import numpy as np

from curate.errors import CurateError
from curate.store import Store, score_views, write_atomic

MAX_POINTS = 5000  # embedding map subsample
MAP_SELECTIONS = 3  # newest selections drawn on the map
MAX_SELECTIONS = 20  # selections detailed
TEXT_CHARS = 400  # example text shown before truncation
_LONG = ("params", "recipe")  # manifest fields shown as blocks, not table cells
_SCORE_META = {"id", "reason", "scorer", "scorer_version", "model", "params", "config"}
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
            "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")


def build_report(store: Store | str | Path, out: Path, max_points: int = MAX_POINTS) -> Path:
    """Write the report of `store` to `out` (one offline HTML file) and return its path."""
    from curate import __version__

    store = (store if isinstance(store, Store) else Store(store)).require()
    out = Path(out)
    if max_points < 3:
        raise CurateError(f"max_points={max_points} is too few to draw a map\n  fix: use 3 "
                          f"or more (default {MAX_POINTS})")
    if out.is_dir():
        raise CurateError(f"{out} is a directory\n  fix: give a file name, e.g. "
                          f"--out {out / 'report.html'}")
    con = store.connect()
    try:
        views = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
        ctx = _Context(store, con, views, max_points)
        sections = [
            ("composition", "Composition", _composition(ctx)),
            ("scores", "Score distributions", _scores(ctx)),
            ("map", "Embedding map", _embedding_map(ctx)),
            ("dedup", "Duplicates", _dedup(ctx)),
            ("quarantine", "Quarantine", _quarantine(ctx)),
            ("selections", "Selections", _selections(ctx)),
            ("compare", "Fine-tune runs and comparisons", _compare(ctx)),
            ("masks", "Token masks", _masks(ctx)),
        ]
    finally:
        con.close()
    toc = "".join(f"<a href='#{sid}'>{html.escape(title)}</a>" for sid, title, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{html.escape(title)}</h2>{content}</section>"
                   for sid, title, content in sections)
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>curate report: {html.escape(store.root.name)}</title><style>{_CSS}</style>"
        "</head><body><header><h1>curate report</h1>"
        f"<p>store <code>{html.escape(str(store.root))}</code> · generated "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} · curate {__version__}</p>"
        f"<nav>{toc}</nav></header><main>{body}</main></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, page.encode("utf-8"))
    return out


class _Context:
    def __init__(self, store: Store, con, views: set[str], max_points: int):
        self.store = store
        self.con = con
        self.views = views
        self.max_points = max_points

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        rel = self.con.execute(sql, params or [])
        cols = [d[0] for d in rel.description]
        return [dict(zip(cols, r)) for r in rel.fetchall()]

    def scalar(self, sql: str, params: list | None = None):
        return self.con.execute(sql, params or []).fetchall()[0][0]

    def tokens_join(self) -> tuple[str, str] | None:
        """(JOIN clause over alias e, token expression), as selection budgets count them:
        the lm scorer's prompt + response tokens, else heuristics' total_tokens."""
        joins, exprs = [], []
        if "scores_lm" in self.views:
            joins.append("LEFT JOIN scores_lm l ON l.id = e.id")
            exprs.append("l.prompt_tokens + l.response_tokens")
        if "scores_heuristics" in self.views:
            joins.append("LEFT JOIN scores_heuristics h ON h.id = e.id")
            exprs.append("h.total_tokens")
        if not joins:
            return None
        return " ".join(joins), "coalesce(" + ", ".join(exprs) + ")"

    def manifests(self) -> list[dict]:
        from curate.selection import list_selections

        return list_selections(self.store)


# ---------------------------------------------------------------- helpers

def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return ""
        return f"{v:,.0f}" if abs(v) >= 1e5 else f"{v:.4g}"
    return str(v)


def _table(rows: list[dict], columns: list[str] | None = None, limit: int | None = None,
           right: set[str] = frozenset()) -> str:
    """An HTML table of `rows`; numbers (and the columns in `right`) right-aligned."""
    if not rows:
        return "<p class='empty'>(none)</p>"
    columns = columns or list(rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows[:limit] if limit else rows:
        cells = []
        for c in columns:
            v = r.get(c)
            num = c in right or (isinstance(v, (int, float, np.integer, np.floating))
                                 and not isinstance(v, bool))
            cells.append(f"<td class='num'>{html.escape(_fmt(v))}</td>" if num
                         else f"<td>{_text(_fmt(v), 200)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f"<p class='note'>{len(rows) - limit:,} more rows not shown.</p>"
            if limit and len(rows) > limit else "")
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(body)}</table></div>{more}"


def _text(text: str | None, limit: int = TEXT_CHARS) -> str:
    """Escaped text, truncated with a note of what was cut."""
    if text is None:
        return "<span class='more'>(none)</span>"
    if len(text) <= limit:
        return html.escape(text)
    return (html.escape(text[:limit]) +
            f"<span class='more'> … ({len(text) - limit:,} more chars)</span>")


def _img(uri: str, alt: str) -> str:
    return f"<img src='{uri}' alt='{html.escape(alt)}'>"


def _empty(text: str) -> str:
    return f"<p class='empty'>{text}</p>"


# ---------------------------------------------------------------- sections

def _composition(ctx: _Context) -> str:
    from curate.report import figures

    tot = ctx.rows("""SELECT (SELECT count(*) FROM examples) AS examples,
        (SELECT count(DISTINCT source) FROM examples) AS sources,
        (SELECT count(*) FROM ingest_runs) AS ingested_files,
        (SELECT count(*) FROM duplicates) AS duplicates,
        (SELECT count(*) FROM quarantine) AS quarantined""")[0]
    tokens = ctx.tokens_join()
    tok_cols = (f", sum({tokens[1]})::BIGINT AS tokens, round(avg({tokens[1]}))::BIGINT "
                "AS tokens_mean") if tokens else ""
    by = ctx.rows(f"""SELECT e.source, e.kind, count(*) AS rows{tok_cols},
            round(avg(len(e.messages)), 1) AS turns_mean
        FROM examples e {tokens[0] if tokens else ''}
        GROUP BY 1, 2 ORDER BY rows DESC, 1, 2""")
    if tokens:
        tot["tokens"] = sum(r["tokens"] or 0 for r in by)
    read = tot["examples"] + tot["duplicates"] + tot["quarantined"]
    out = [f"<div class='cards'>{''.join(_card(k, v) for k, v in tot.items())}</div>",
           f"<p>rows read = stored + duplicates + quarantined: {read:,} = {tot['examples']:,} "
           f"+ {tot['duplicates']:,} + {tot['quarantined']:,}.</p>"]
    if not by:
        return "".join(out) + _empty("The store holds no examples yet (curate ingest FILE).")
    if not tokens:
        out.append("<p class='note'>No token counts: run <code>curate score heuristics</code> "
                   "(or <code>lm</code>) to see tokens.</p>")
    kinds = ctx.rows("SELECT kind, count(*) AS rows FROM examples GROUP BY 1 ORDER BY 2 DESC")
    out.append(_img(figures.composition(by, [k["kind"] for k in kinds]),
                    "rows and tokens per source, by kind"))
    if tot["sources"] > figures.MAX_BARS:
        out.append(f"<p class='note'>The plot shows the {figures.MAX_BARS} largest sources.</p>")
    out.append("<h3>By source and kind</h3>" + _table(by, limit=100))
    if tokens:
        out.append("<h3>By kind</h3>" + _table(ctx.rows(
            f"SELECT e.kind, count(*) AS rows, sum({tokens[1]})::BIGINT AS tokens "
            f"FROM examples e {tokens[0]} GROUP BY 1 ORDER BY rows DESC")))
    return "".join(out)


def _card(name: str, value) -> str:
    return (f"<div class='card'><div class='value'>{_fmt(value)}</div>"
            f"<div class='label'>{html.escape(name.replace('_', ' '))}</div></div>")


def _scores(ctx: _Context) -> str:
    from curate.report import figures

    views = sorted(v for v in score_views(ctx.store.root) if v in ctx.views)
    if not views:
        return _empty("No scores yet: run <code>curate score heuristics</code>, "
                      "<code>embed</code> or <code>lm</code>.")
    out = []
    for view in views:
        described = ctx.con.execute(f"DESCRIBE {view}").fetchall()
        numeric = [name for name, typ, *_ in described
                   if name not in _SCORE_META and typ.split("(")[0] in _NUMERIC]
        meta = ctx.rows(f"SELECT scorer, scorer_version, model, params, config, count(*) AS rows,"
                        f" count(reason) AS skipped FROM {view} GROUP BY ALL")
        out.append(f"<h3><code>{html.escape(view)}</code></h3>" + _table(meta))
        if not numeric:
            other = [n for n, *_ in described if n not in _SCORE_META]
            out.append("<p class='note'>No numeric columns to plot "
                       f"({html.escape(', '.join(other))}).</p>")
            continue
        table = ctx.con.sql(
            f"SELECT {', '.join(_quote(c) for c in numeric)} FROM {view}").to_arrow_table()
        values, summary = {}, []
        for c in numeric:
            v = table[c].to_numpy(zero_copy_only=False)
            v = np.asarray(v, dtype=np.float64)
            v = v[np.isfinite(v)]
            stats = {"mean": float(v.mean()), "min": float(v.min()), "p50": float(np.median(v)),
                     "max": float(v.max())} if len(v) else {}
            summary.append({"column": c, "values": len(v),
                            "null_or_inf": table.num_rows - len(v), **stats})
            if len(v):
                values[c] = v
        if values:
            drawn = [figures.histogram_svg(c, v) for c, v in values.items()]
            out.append("<div class='hists'>" + "".join(svg for svg, _ in drawn) + "</div>")
            clipped = [c for c, (_, cut) in zip(values, drawn) if cut]
            if clipped:
                out.append(f"<p class='note'>* values outside the 0.1–99.9 percentiles left out "
                           f"of the plot: {html.escape(', '.join(clipped))}.</p>")
        columns = ["column", "values", "null_or_inf", "mean", "min", "p50", "max"]
        out.append(f"<details><summary>summary of {len(numeric)} columns</summary>"
                   f"{_table(summary, columns)}</details>")
    return "".join(out)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _embedding_map(ctx: _Context) -> str:
    from curate.report import figures

    if "scores_embed" not in ctx.views:
        return _empty("No embeddings: run <code>curate score embed</code>.")
    n = ctx.scalar("SELECT count(*) FROM scores_embed WHERE embedding IS NOT NULL")
    if n < 3:
        return _empty(f"Too few embeddings to map ({n}).")
    rel = ctx.con.sql(
        "SELECT m.id, m.embedding, e.source FROM scores_embed m LEFT JOIN examples e "
        "ON e.id = m.id WHERE m.embedding IS NOT NULL ORDER BY hash(m.id), m.id LIMIT $1",
        params=[ctx.max_points]).to_arrow_table()
    ids = rel["id"].to_pylist()
    sources = ["(not in examples)" if s is None else s for s in rel["source"].to_pylist()]
    emb = rel["embedding"].combine_chunks()
    X = np.asarray(emb.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(len(ids), -1)
    centered = X - X.mean(axis=0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    xy = centered @ vt[:2].T
    explained = (s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-12)
    notes = [f"PCA of {len(ids):,} embeddings"
             + (f" (a deterministic subsample of {n:,}: at most {ctx.max_points:,} points are "
                "drawn)" if n > len(ids) else "")
             + f"; the two axes explain {explained:.0%} of the variance."]
    clusters = None
    k = min(8, max(2, int(round(math.sqrt(len(ids) / 2)))), len(ids))
    try:
        from curate.selectors.algorithms.kmeans import kmeans

        clusters = kmeans(X, k, seed=0).labels
        notes.append(f"Colours: spherical k-means with k={k} on the {X.shape[1]}-d embeddings "
                     "of the drawn points.")
    except CurateError as exc:  # FAISS missing: the map still draws, without clusters
        notes.append(f"k-means unavailable ({html.escape(str(exc).splitlines()[0])}).")
    chosen = {}
    for m in ctx.manifests()[:MAP_SELECTIONS]:
        members = {r[0] for r in ctx.con.execute(
            "SELECT id FROM selection_members WHERE selection = ?", [m["name"]]).fetchall()}
        chosen[m["name"]] = np.array([i in members for i in ids], bool)
    if len(ctx.manifests()) > MAP_SELECTIONS:
        notes.append(f"The newest {MAP_SELECTIONS} selections are drawn.")
    by_source, caption = None, ""
    codes, groups, counts, colors = figures.source_groups(sources)
    if len(groups) > 1:
        by_source = (codes, groups, colors)
        caption = ("<figcaption>By source, on the same projection: "
                   + ", ".join(f"<span class='swatch' style='background:{c}'></span>"
                               f"{html.escape(g)} ({k:,} points)"
                               for g, k, c in zip(groups, counts, colors))
                   + ".</figcaption>")
    else:
        notes.append(f"All drawn points come from one source ({html.escape(groups[0])}): "
                     "no map by source.")
    uri = figures.embedding_map(xy, clusters, chosen, by_source)
    panels = (["k-means clusters" if clusters is not None else "all examples"]
              + ([f"by source ({', '.join(groups)})"] if by_source else [])
              + [f"selection {name}" for name in chosen])
    alt = "2-D map of the embeddings: " + "; ".join(panels)
    return ("".join(f"<p>{t}</p>" for t in notes)
            + f"<figure>{_img(uri, alt)}{caption}</figure>")


def _dedup(ctx: _Context) -> str:
    from curate.report import figures

    out = ["<h3>Exact duplicates at ingest</h3>"]
    dups = ctx.rows("SELECT source, count(*) AS duplicates FROM duplicates GROUP BY 1 "
                    "ORDER BY 2 DESC, 1")
    out.append(_table(dups) if dups else _empty("No exact duplicates were found at ingest."))
    out.append("<h3>Dropped by selection dedup steps</h3>")
    steps = ctx.rows("""SELECT selection, step, count(*) AS dropped,
            min(similarity) AS min_similarity, avg(similarity) AS mean_similarity
        FROM selection_dropped GROUP BY 1, 2 ORDER BY 1, 2""")
    if not steps:
        out.append(_empty("No selection dropped duplicates (semdedup, exact-dedup or a recipe "
                          "dedup step records them)."))
        return "".join(out)
    out.append(_table(steps))
    sims = {}
    for sel in sorted({s["selection"] for s in steps}):
        v = np.array([r[0] for r in ctx.con.execute(
            "SELECT similarity FROM selection_dropped WHERE selection = ? AND similarity IS NOT "
            "NULL", [sel]).fetchall()], float)
        if len(v):
            sims[sel] = v
    if sims:
        out.append(_img(figures.similarity_histogram(sims), "similarity of dropped duplicates"))
    for sel in sorted(sims or {s["selection"] for s in steps})[:5]:
        pairs = ctx.rows("""
            WITH d AS (SELECT *, row_number() OVER (ORDER BY similarity, id) AS r,
                              count(*) OVER () AS n FROM selection_dropped WHERE selection = ?)
            SELECT d.id, d.duplicate_of, d.similarity, d.step,
                   a.source AS src_a, a.prompt AS prompt_a, a.response AS response_a,
                   b.source AS src_b, b.prompt AS prompt_b, b.response AS response_b
            FROM d LEFT JOIN pairs a ON a.id = d.id LEFT JOIN pairs b ON b.id = d.duplicate_of
            WHERE d.r IN (SELECT DISTINCT 1 + floor(i * (n - 1) / 5)::BIGINT
                          FROM range(6) t(i), (SELECT max(n) AS n FROM d))
            ORDER BY d.similarity, d.id""", [sel])
        out.append(f"<h4>{html.escape(sel)}: examples from least to most similar</h4>")
        for p in pairs:
            out.append(
                f"<div class='pair'><div class='pairhead'>similarity {_fmt(p['similarity'])} · "
                f"{html.escape(p['step'] or '')}</div>"
                f"<div class='side'><div class='role'>dropped · {html.escape(p['src_a'] or '?')}"
                f"</div>{_pair_text(p['prompt_a'], p['response_a'])}</div>"
                f"<div class='side'><div class='role'>kept · {html.escape(p['src_b'] or '?')}"
                f"</div>{_pair_text(p['prompt_b'], p['response_b'])}</div></div>")
    return "".join(out)


def _pair_text(prompt: str | None, response: str | None) -> str:
    return (f"<div class='content'><b>prompt</b> {_text(prompt, 300)}</div>"
            f"<div class='content'><b>response</b> {_text(response, 300)}</div>")


def _quarantine(ctx: _Context) -> str:
    reasons = ctx.rows("""SELECT regexp_extract(reason, '^[^:]*') AS reason, count(*) AS rows,
            count(DISTINCT path) AS files FROM quarantine GROUP BY 1 ORDER BY 2 DESC, 1""")
    if not reasons:
        return _empty("Nothing was quarantined: every row read became an example or a "
                      "duplicate.")
    out = [_table(reasons), "<h3>Examples</h3>"]
    raw = ctx.rows("""SELECT path, source_row, reason, raw FROM (
            SELECT *, row_number() OVER (PARTITION BY regexp_extract(reason, '^[^:]*')
                                         ORDER BY path, source_row) AS r FROM quarantine)
        WHERE r <= 2 ORDER BY reason, path, source_row LIMIT 12""")
    for r in raw:
        name = html.escape(Path(r["path"] or "?").name)
        out.append(f"<div class='example'><div class='exid'>{name}"
                   f" row {_fmt(r['source_row'])}: {_text(r['reason'], 200)}</div>"
                   f"<pre>{_text(r['raw'], 500)}</pre></div>")
    return "".join(out)


def _selections(ctx: _Context) -> str:
    manifests = ctx.manifests()
    if not manifests:
        return _empty("No selections yet: run <code>curate select METHOD --name NAME</code>.")
    summary = [{k: m.get(k) for k in ("name", "method", "budget", "size", "tokens", "pool_size",
                                      "dropped", "masked", "created_at", "seconds")}
               for m in manifests]
    out = [_table(summary)]
    for m in manifests[:MAX_SELECTIONS]:
        params = json.dumps(m.get("params"), indent=1, sort_keys=True, default=str)
        out.append(
            f"<details{' open' if m is manifests[0] else ''}><summary><b>"
            f"{html.escape(m['name'])}</b> · {html.escape(str(m.get('method')))} · "
            f"{_fmt(m.get('size'))} examples · {_fmt(m.get('tokens')) or '?'} tokens · budget "
            f"{html.escape(str(m.get('budget')))}</summary>"
            f"{_table([{'field': k, 'value': v} for k, v in m.items() if k not in _LONG])}"
            f"<p><b>params</b></p><pre>{_text(params, 4000)}</pre>"
            + (f"<p><b>recipe</b></p><pre>{_text(m['recipe'], 4000)}</pre>"
               if m.get("recipe") else "")
            + f"<p><b>source mix against the pool</b></p>{_source_mix(ctx, m)}</details>")
    if len(manifests) > MAX_SELECTIONS:
        out.append(f"<p class='note'>{len(manifests) - MAX_SELECTIONS} older selections not "
                   "detailed.</p>")
    return "".join(out)


def _source_mix(ctx: _Context, m: dict) -> str:
    """Per source: its share of the selection's pool against its share of the selection,
    and their ratio, sorted by pool share (a pool source the selection never picked: 0)."""
    from curate.report import figures

    pool_sql, note, registered = "SELECT id, source FROM examples", "", False
    where = m.get("pool_where")
    if where:
        from curate.selectors.pool import Pool

        try:
            pool = Pool(ctx.store, where)
            try:
                import pyarrow as pa

                ctx.con.register("_report_pool", pa.table({"id": list(pool.ids)}, schema=pa.schema(
                    [("id", pa.string())])))
                registered = True
            finally:
                pool.close()
            pool_sql = ("SELECT e.id, e.source FROM examples e "
                        "JOIN _report_pool p ON p.id = e.id")
            note = f"The pool is the examples where <code>{html.escape(where)}</code>. "
        except CurateError as exc:
            note = (f"The pool filter <code>{html.escape(where)}</code> no longer runs "
                    f"({html.escape(str(exc).splitlines()[0])}): shares are against the whole "
                    "store. ")
    tokens = ctx.tokens_join()
    tok_col = f", sum({tokens[1]})::BIGINT AS tokens" if tokens else ""
    try:
        mix = ctx.rows(f"""
            WITH pool AS (SELECT source, count(*) AS pool_rows FROM ({pool_sql}) GROUP BY 1),
            sel AS (SELECT e.source, count(*) AS rows{tok_col}
                    FROM selection_members s JOIN examples e ON e.id = s.id
                         {tokens[0] if tokens else ''}
                    WHERE s.selection = ? GROUP BY 1)
            SELECT coalesce(pool.source, sel.source) AS source,
                   coalesce(pool.pool_rows, 0) AS pool_rows, coalesce(sel.rows, 0) AS rows
                   {', sel.tokens' if tokens else ''}
            FROM pool FULL OUTER JOIN sel ON sel.source = pool.source""", [m["name"]])
    finally:
        if registered:
            ctx.con.unregister("_report_pool")
    pool_n, sel_n = sum(r["pool_rows"] for r in mix), sum(r["rows"] for r in mix)
    if pool_n and pool_n != m.get("pool_size"):
        note += (f"The pool holds {pool_n:,} examples now, {_fmt(m.get('pool_size'))} when the "
                 "selection was made. ")
    if not sel_n:
        return f"<p class='note'>{note}</p>" + _empty("The selection is empty.")
    if len(mix) == 1:
        return (f"<p class='note'>{note}The pool has one source "
                f"({html.escape(str(mix[0]['source']))}): all of the selection comes from it."
                "</p>")
    for r in mix:
        r["pool_share"] = r["pool_rows"] / pool_n if pool_n else 0.0
        r["share"] = r["rows"] / sel_n
    mix.sort(key=lambda r: (-r["pool_share"], -r["share"], str(r["source"])))
    table = [{"source": r["source"], "pool rows": r["pool_rows"],
              "pool share": f"{100 * r['pool_share']:.1f}%", "selected rows": r["rows"],
              "selection share": f"{100 * r['share']:.1f}%",
              "ratio": f"{r['share'] / r['pool_share']:.2f}" if r["pool_share"] else "",
              **({"selected tokens": r.get("tokens")} if tokens else {})} for r in mix]
    never = sum(1 for r in mix if not r["rows"])
    note += ("Ratio = selection share / pool share (above 1: over-represented). "
             + (f"{never} of {len(mix)} pool sources were never picked." if never else ""))
    return (f"<div class='mix' data-selection='{html.escape(m['name'])}'>"
            f"{figures.source_mix_svg(mix)}"
            + _table(table, right={"pool share", "selection share", "ratio"}, limit=40)
            + f"<p class='note'>{note}</p></div>")


def _compare(ctx: _Context) -> str:
    from curate.finetune.compare import format_board

    out = ["<h3>Leaderboards</h3>"]
    boards = sorted((ctx.store.folder("compare")).glob("*/leaderboard.json"),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    if not boards:
        out.append(_empty("No comparisons yet: run <code>curate compare --target T "
                          "--selections A,B</code>."))
    for path in boards[:5]:
        try:
            board = json.loads(path.read_text())
            rows = format_board(board)
        except (ValueError, KeyError, TypeError) as exc:
            out.append(f"<p class='note'>{html.escape(str(path))} is unreadable "
                       f"({html.escape(str(exc))}).</p>")
            continue
        try:
            figure = _leaderboard_figure(board)
        except (ValueError, KeyError, TypeError) as exc:  # the table still shows
            figure = f"<p class='note'>No leaderboard figure ({html.escape(str(exc))}).</p>"
        out.append(f"<h4>target {html.escape(str(board.get('target')))} · baseline "
                   f"{html.escape(str(board.get('baseline')))} · seeds "
                   f"{html.escape(str(board.get('seeds')))} · "
                   f"<code>{html.escape(path.parent.name)}</code></h4>" + figure + _table(rows))
        for note in board.get("notes") or []:
            out.append(f"<p class='note'>{html.escape(note)}</p>")
    if len(boards) > 5:
        out.append(f"<p class='note'>{len(boards) - 5} older comparisons not shown.</p>")
    out.append("<h3>Runs</h3>")
    runs = ctx.rows("""SELECT run_id, selection, model, method, seed, steps, examples, tokens,
            final_loss, seconds, status, created_at FROM runs ORDER BY created_at DESC""")
    out.append(_table(runs, limit=30) if runs else _empty("No fine-tuning runs yet."))
    out.append("<h3>Evaluations</h3>")
    evals = ctx.rows("""SELECT eval_id, run_id, model, target, examples, tokens, nll, accuracy,
            overlap, seconds, created_at FROM evals ORDER BY created_at DESC""")
    out.append(_table(evals, limit=30) if evals else _empty("No evaluations yet."))
    return "".join(out)


def _leaderboard_figure(board: dict) -> str:
    """Mean target NLL per selection with error bars (one std over the seeds), captioned."""
    from curate.report import figures

    if not board.get("arms"):
        return _empty("The comparison has no arms.")
    seeds = len(board.get("seeds") or []) or max(len(a.get("runs") or []) for a in board["arms"])
    spread = (f"mean ± std over {seeds} seeds: the error bars are ± 1 sample standard "
              f"deviation (ddof=1) of the {seeds} runs" if seeds > 1
              else "one seed, so no error bars")
    summary = "; ".join(f"{a['selection']} {a['nll_mean']:.4f} ± {a.get('nll_std') or 0:.4f}"
                        for a in board["arms"])
    caption = (f"Mean target NLL per token per selection (lower is better), {spread}. Dots are "
               "the single runs, the dashed line the base model"
               + (", the baseline in red." if board.get("baseline") else "."))
    return (f"<figure>{_img(figures.leaderboard(board), 'leaderboard: ' + summary)}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _masks(ctx: _Context) -> str:
    from curate.report.masks import section

    return section(ctx.store, ctx.con)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 28px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:0 0 8px;color:#c9cfdb}
header code{color:#fff}
nav a{color:#9fc5ff;margin-right:14px;text-decoration:none;white-space:nowrap}
main{max-width:1180px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:6px;margin:18px 0;
 padding:6px 20px 16px}
h2{font-size:19px;border-bottom:1px solid #e1e4ea;padding-bottom:6px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:13px;margin:14px 0 6px;color:#3b4458}
table{border-collapse:collapse;font-size:12.5px;margin:4px 0}
th,td{border:1px solid #e1e4ea;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto;max-width:100%}
img{max-width:100%;height:auto;display:block;margin:8px 0}
figure{margin:8px 0}figcaption{color:#3b4458;font-size:12.5px;margin:2px 0 8px}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 6px;
 vertical-align:baseline}
svg.mix{display:block;margin:6px 0}
pre{white-space:pre-wrap;word-break:break-word;background:#f6f7f9;padding:6px 8px;
 border-radius:4px;font-size:12px;margin:4px 0}
.hists{display:flex;flex-wrap:wrap;gap:6px 10px;margin:8px 0}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid #e1e4ea;border-radius:6px;padding:8px 14px;min-width:110px}
.card .value{font-size:20px;font-weight:600}.card .label{color:#667085;font-size:12px}
.empty{color:#667085;font-style:italic}.note{color:#667085;font-size:12.5px}
.more{color:#98a2b3;font-style:italic}
details{margin:8px 0;border:1px solid #e1e4ea;border-radius:4px;padding:4px 10px}
summary{cursor:pointer}
.example,.pair{border:1px solid #e1e4ea;border-radius:4px;margin:8px 0;padding:6px 10px}
.exid,.pairhead{font-family:ui-monospace,monospace;font-size:11.5px;color:#667085}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:6px 14px}.pairhead{grid-column:1/3}
.side{min-width:0}
.turn{margin:6px 0;padding:4px 8px;border-left:3px solid #9fc5ff;background:#fafbfc}
.turn .content,.side .content{white-space:pre-wrap;word-break:break-word;font-size:12.5px}
.role{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#667085}
.masked-turn{border-left-color:#d62728;opacity:.6;
 background:repeating-linear-gradient(45deg,#fff,#fff 6px,#fbeaea 6px,#fbeaea 12px)}
.tok{border-radius:2px;box-shadow:inset -1px 0 #d6dbe3}
.tok.masked{background:#f8c9c9;color:#8a1c1c;text-decoration:line-through}
"""
