"""The run report: a self-contained HTML page with real figures from a sample store, that
renders empty stores too, escapes example text, and shows token masks."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import select as selectmod
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import DATA, rows, write_jsonl
from curate.ingest import ingest
from curate.report import build_report
from curate.store import Store

CHROMIUM = "/usr/bin/chromium"
HOSTILE = "<script>alert('x')</script> & <b>bold</b>"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample corpus of data/ plus one hostile file, scored (heuristics, embed),
    with a random, a k-means and a semdedup selection."""
    from curate.scoring import make_scorer, run_scorer
    from curate.selectors import select

    tmp = tmp_path_factory.mktemp("report")
    store = Store(tmp / "store")
    ingest(store, [DATA])
    ingest(store, [write_jsonl(tmp / "hostile.jsonl", [
        {"instruction": f"Explain {HOSTILE}", "output": f"It renders as {HOSTILE}."},
        '{"instruction": "<img src=x onerror=alert(1)> ' + HOSTILE + '", "output": ',  # broken
    ])])
    run_scorer(store, make_scorer("heuristics"))
    run_scorer(store, make_scorer("embed", text="prompt"))
    select(store, "random", "random-20pct", budget="20%")
    select(store, "kmeans", "diverse", budget="20%", clusters=6)
    select(store, "semdedup", "deduped", threshold=0.9)
    out = build_report(store, tmp / "report.html")
    return store, out, out.read_text()


class _Page(HTMLParser):
    """Every URL the page references, its images, and its scripts."""

    def __init__(self):
        super().__init__()
        self.urls, self.images, self.scripts, self.ids = [], [], 0, set()
        self.handlers = []  # on* attributes: none may come from example text

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.scripts += tag == "script"
        self.handlers += [k for k in a if k.startswith("on")]
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(a[key])
        if tag == "img":
            self.images.append(a.get("src", ""))
        if a.get("id"):
            self.ids.add(a["id"])


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


def test_report_shows_the_real_figures_of_the_store(sample):
    store, out, page = sample
    (examples, sources, dups, quar), = rows(store, """SELECT (SELECT count(*) FROM examples),
        (SELECT count(DISTINCT source) FROM examples), (SELECT count(*) FROM duplicates),
        (SELECT count(*) FROM quarantine)""")
    cards = dict((label, value) for value, label in re.findall(
        r"<div class='value'>([\d,]+)</div><div class='label'>([a-z ]+)</div>", page))
    assert cards["examples"] == f"{examples:,}" and cards["sources"] == str(sources)
    assert cards["duplicates"] == str(dups) == "12" and cards["quarantined"] == str(quar) == "9"
    (tokens,), = rows(store, "SELECT sum(total_tokens) FROM scores_heuristics")
    assert cards["tokens"] == f"{tokens:,}"
    for source, count in rows(store, "SELECT source, count(*) FROM examples GROUP BY 1"):
        assert f">{source}<" in page
    # scores: every numeric heuristics column gets a histogram panel and a summary row
    assert "<code>scores_heuristics</code>" in page and "<code>scores_embed</code>" in page
    for col in ("total_tokens", "distinct_2", "repetition"):
        assert f"<td>{col}</td>" in page
    # embedding map, coloured by k-means and by the newest selections
    assert f"PCA of {examples:,} embeddings" in page and "spherical k-means with k=" in page
    # dedup and quarantine
    (dropped,), = rows(store, "SELECT count(*) FROM selection_dropped WHERE selection = 'deduped'")
    assert dropped > 0 and f"<td class='num'>{dropped}</td>" in page
    assert page.count("<div class='pair'>") >= 2 and "malformed JSON" in page
    # selections: manifests and composition
    for name in ("random-20pct", "diverse", "deduped"):
        assert f"<b>{name}</b>" in page
    (size,), = rows(store, "SELECT size FROM selections WHERE name = 'diverse'")
    assert f"diverse</b> · kmeans · {size} examples" in page
    assert "No comparisons yet" in page and "No selection carries loss masks" in page


def test_large_stores_draw_a_stated_subsample(sample, tmp_path):
    store, _, _ = sample
    (n,), = rows(store, "SELECT count(*) FROM scores_embed")
    page = build_report(store, tmp_path / "r.html", max_points=100).read_text()
    assert f"PCA of 100 embeddings (a deterministic subsample of {n:,}" in page


def test_report_is_self_contained_and_escaped(sample):
    _, out, page = sample
    from PIL import Image

    p = _parse(page)
    assert p.scripts == 0
    assert all(u.startswith(("data:", "#")) for u in p.urls), [u[:40] for u in p.urls]
    assert {"composition", "scores", "map", "dedup", "quarantine", "selections", "compare",
            "masks"} <= p.ids
    assert len(p.images) == 3  # composition, embedding map, dedup similarities
    assert page.count("<svg class='hist'") == 14  # every numeric heuristics column
    for src in p.images:  # every figure decodes
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
    assert not p.handlers and "<b>bold</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the quarantined raw line
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold" in page


def test_fresh_store_renders_every_section(tmp_path):
    store = Store(tmp_path / "store")
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Hi", "output": "Hello"}])])
    page = build_report(store, tmp_path / "r.html").read_text()
    for says in ("No scores yet", "No embeddings", "No selections yet", "No comparisons yet",
                 "No fine-tuning runs yet", "Nothing was quarantined", "No selection carries",
                 "No token counts"):
        assert says in page
    assert "<div class='value'>1</div><div class='label'>examples</div>" in page


def test_cli_writes_the_report_and_fails_clearly_without_a_store(tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    store = tmp_path / "store"
    ingest(Store(store), [write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Q", "output": "A"}])])
    out = tmp_path / "deep" / "report.html"
    res = CliRunner().invoke(app, ["report", "--store", str(store), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<!doctype html>")
    done = subprocess.run([sys.executable, "-m", "curate.cli", "report", "--store",
                           str(tmp_path / "none")], capture_output=True, text=True)
    assert done.returncode == 2 and "not a curate store" in " ".join(done.stderr.split())


def test_leaderboard_runs_and_evals_are_shown(tmp_path):
    from curate.finetune.compare import plot

    store = Store(tmp_path / "store")
    ingest(store, [write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Q", "output": "A"}])])
    arm = {"method": "random", "size": 10, "tokens": 500, "runs": [], "nll_std": 0.01,
           "accuracy_mean": None, "accuracy_std": None, "overlap": 0,
           "wall_seconds_per_run": 3.5, "p_value": None}
    board = {"target": "gsm8k_test.jsonl", "baseline": "random-5pct", "seeds": [0, 1],
             "base": {"model": "smollm2-135m", "nll": 1.9, "accuracy": None},
             "notes": ["the selections differ by more than 10% in tokens"],
             "arms": [{**arm, "selection": "fl-quality", "nll_mean": 1.61,
                       "delta_vs_baseline": -0.12, "p_value": 0.031},
                      {**arm, "selection": "random-5pct", "nll_mean": 1.73,
                       "delta_vs_baseline": None}]}
    folder = store.root / "compare" / "abc123"
    folder.mkdir(parents=True)
    (folder / "leaderboard.json").write_text(json.dumps(board))
    plot(board, folder / "leaderboard.png")
    page = build_report(store, tmp_path / "r.html").read_text()
    assert "fl-quality" in page and "random-5pct (baseline)" in page and "-0.1200" in page
    assert "1.6100 ± 0.0100" in page and "differ by more than 10%" in page
    assert page.count("<img src='data:image/png;base64,") == 2  # composition + leaderboard

    assert "error bars are ± 1 sample standard deviation (ddof=1) of the 2 runs" in page
    assert "leaderboard: fl-quality 1.6100 ± 0.0100; random-5pct 1.7300 ± 0.0100" in page
    one_seed = {**board, "seeds": [0], "arms": [{**a, "nll_std": 0.0} for a in board["arms"]]}
    (folder / "leaderboard.json").write_text(json.dumps(one_seed))
    page = build_report(store, tmp_path / "r.html").read_text()
    assert "one seed, so no error bars" in page and "1.6100 ± 0.0000" in page


def test_map_by_source_and_source_mix_against_the_pool(sample):
    import html

    store, _, page = sample
    assert "By source, on the same projection" in page
    for source, n in rows(store, "SELECT e.source, count(*) FROM scores_embed m "
                                 "JOIN examples e USING (id) GROUP BY 1"):
        assert f"{html.escape(source)} ({n:,} points)" in page
    block = page.split("<div class='mix' data-selection='diverse'>")[1].split("</div>")[0]
    (total,), = rows(store, "SELECT count(*) FROM examples")
    (size,), = rows(store, "SELECT size FROM selections WHERE name = 'diverse'")
    mix = rows(store, """SELECT e.source, count(*), count(s.id) FROM examples e
        LEFT JOIN selection_members s ON s.id = e.id AND s.selection = 'diverse' GROUP BY 1""")
    assert len(mix) > 1
    for source, pool_n, sel_n in mix:
        pool_share, share = pool_n / total, sel_n / size
        assert (f"{100 * pool_share:.1f}% → {100 * share:.1f}%" in block
                and f"<td class='num'>{share / pool_share:.2f}</td>" in block), source


def test_source_mix_is_against_the_filtered_pool(tmp_path):
    from curate.selectors import select

    store = Store(tmp_path / "store")
    for name, n in (("a", 6), ("b", 3), ("c", 5)):
        ingest(store, [write_jsonl(tmp_path / f"{name}.jsonl", [
            {"instruction": f"{name} question {i}", "output": f"answer {i}"} for i in range(n)])])
    assert sorted(s for s, in rows(store, "SELECT DISTINCT source FROM examples")) == list("abc")
    select(store, "random", "ab", budget=3, where="source IN ('a', 'b')")
    page = build_report(store, tmp_path / "r.html").read_text()
    block = page.split("<div class='mix' data-selection='ab'>")[1].split("</details>")[0]
    assert "The pool is the examples where" in block and ">c<" not in block
    assert "66.7% → " in block and "33.3% → " in block  # 6 and 3 of a pool of 9, not of 14


def test_source_groups_fold_the_tail_into_one_grey_group():
    from curate.report.figures import OTHER_COLOR, source_groups

    sources = [f"s{i:02d}" for i in range(15) for _ in range(15 - i)] + ["s14"] * 20
    codes, groups, counts, colors = source_groups(sources)
    assert groups[0] == "s14" and groups[-1] == "7 other sources" and colors[-1] == OTHER_COLOR
    assert len(groups) == len(colors) == len(counts) and sum(counts) == len(sources)
    assert len(set(colors[:-1])) == len(colors) - 1 and OTHER_COLOR not in colors[:-1]
    assert codes.max() == len(groups) - 1 and counts[-1] == sum(range(2, 9))  # s07..s13
    codes, groups, counts, colors = source_groups(["x", "y", "x"])
    assert groups == ["x", "y"] and counts == [2, 1] and list(codes) == [0, 1, 0]


# ---------------------------------------------------------------- token masks

CONVERSATION = [
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "Let me think: 2 + 2 = 5."},
    {"role": "user", "content": "Check again."},
    {"role": "assistant", "content": "Sorry, 2 + 3 = 5. <Done> & dusted."},
]


@pytest.fixture(scope="module")
def masked_store(tmp_path_factory):
    """A selection whose first member masks its first assistant turn and three tokens."""
    from curate.report.masks import load_tokenizer, response_tokens
    from curate.selectors import select
    from curate.selection import make_masks, save_selection

    tmp = tmp_path_factory.mktemp("masks")
    store = Store(tmp / "store")
    ingest(store, [write_jsonl(tmp / "chat.jsonl", [
        {"messages": CONVERSATION},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}]},
    ])])
    (cid,), = rows(store, "SELECT id FROM examples WHERE len(messages) = 4")
    tok, why = load_tokenizer("smollm2-135m")
    assert tok is not None, why
    pieces = response_tokens(tok, CONVERSATION)
    mask = [1] * len(pieces)
    mask[1:4] = [0, 0, 0]
    base = select(store, "random", "all", budget=2)
    for name, model in (("cleaned", "smollm2-135m"), ("no-tokenizer", str(tmp / "missing"))):
        save_selection(store, replace(
            base, name=name, params={**base.params, "mask_model": model},
            masks=make_masks([cid], turns=[[False, True]], tokens=[mask],
                             reasons=["wrong arithmetic <b>"])))
    return store, tmp, pieces, mask, tok


def test_token_masks_are_drawn_on_the_lm_tokenization(masked_store):
    import html

    store, tmp, pieces, mask, tok = masked_store
    page = build_report(store, tmp / "r.html").read_text()
    section = page[page.index("id='masks'"):]
    assert "<h3>cleaned</h3>" in section and "1 masked examples" in section
    masked = re.findall(r"<span class='tok masked'>(.*?)</span>", section)
    assert masked[:3] == [html.escape(p) for p in pieces[1:4]]
    assert "3 of " + str(len(mask)) + " tokens masked" in section
    assert "masked-turn" in section and "assistant · no loss" in section
    assert "wrong arithmetic &lt;b&gt;" in section
    # the last token is the end-of-turn token, as the lm scorer and fine-tuning count them
    assert pieces[-1] == tok.decode(tok("<|im_end|>", add_special_tokens=False)["input_ids"])
    # without the tokenizer: turn masks only, and the token mask summarized
    assert "showing turn masks only" in section
    assert f"token mask: 3 of {len(mask)} tokens masked (not drawn)" in section


def test_mask_token_count_equals_the_lm_scorers(masked_store):
    """The viewer's tokens are the ones `scores_lm` counts as response_tokens."""
    from curate.tokens import response_sequences

    _, _, pieces, _, tok = masked_store
    r = response_sequences(tok, [CONVERSATION], max_tokens=512)
    assert r.response_tokens(0) == len(pieces)
    assert "".join(pieces[:-1]) == CONVERSATION[-1]["content"]


# ---------------------------------------------------------------- in a real browser

def _to_fds_3_and_4(read_end: int, write_end: int) -> None:
    """In the child: the pipe ends become fds 3 and 4 (copied high first, so neither
    overwrites the other)."""
    import fcntl

    a, b = fcntl.fcntl(read_end, fcntl.F_DUPFD, 10), fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)
    os.dup2(a, 3)
    os.dup2(b, 4)


class _DevTools:
    """A minimal Chrome DevTools Protocol client over --remote-debugging-pipe."""

    def __init__(self, user_dir: Path):
        r_in, self._w = os.pipe()  # we write commands to fd 3 of chromium
        self._r, w_out = os.pipe()  # chromium writes replies to its fd 4
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={user_dir}", "--remote-debugging-pipe",
             "about:blank"],
            pass_fds=(3, 4), preexec_fn=lambda: _to_fds_3_and_4(r_in, w_out),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_in)
        os.close(w_out)
        self._buf, self._next, self.events = b"", 0, []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self._next:
                assert "error" not in reply, reply
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._read(deadline - time.monotonic()))

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            ready, _, _ = selectmod.select([self._r], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (TimeoutError, EOFError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(sample, masked_store,
                                                                     tmp_path):
    _, out, _ = sample
    store, tmp, *_ = masked_store
    masks_page = build_report(store, tmp_path / "masks.html")
    cdp = _DevTools(tmp_path / "chromium")
    try:
        target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            cdp.send(f"{domain}.enable", session=session)
        for page in (out, masks_page):
            cdp.events.clear()
            cdp.send("Page.navigate", {"url": page.as_uri()}, session=session)
            cdp.wait_for("Page.loadEventFired")
            state = cdp.send("Runtime.evaluate", {"returnByValue": True, "expression": """
                JSON.stringify({sections: document.querySelectorAll('section').length,
                  images: document.images.length,
                  broken: [...document.images].filter(i => !i.complete || !i.naturalWidth).length,
                  title: document.querySelector('h1').textContent,
                  height: document.body.scrollHeight})"""}, session=session)
            state = json.loads(state["result"]["value"])
            problems = [e for e in cdp.events if e.get("method") in (
                "Runtime.exceptionThrown", "Runtime.consoleAPICalled")
                or (e.get("method") == "Log.entryAdded"
                    and e["params"]["entry"]["level"] in ("error", "warning"))]
            assert not problems, problems
            assert state["title"] == "curate report" and state["sections"] == 8
            assert state["images"] >= 1 and state["broken"] == 0 and state["height"] > 1000
    finally:
        cdp.close()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)
