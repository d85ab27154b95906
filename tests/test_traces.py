"""Trace-aware selection: outcome filters, rejection sampling (correct only, at most k per
prompt, diverse first), GRAPE (the lowest-NLL response per prompt), expert failures
(turn masks over failed traces, by step losses or per-step influence) and the per-step
loss scorer, on constructed traces and on real FireAct / GSM8K multi-solution rows. Model
scores come from a 2-layer Llama built here with the SmolLM2 tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT, corpora_path, rows, write_jsonl
from curate.errors import CurateError
from curate.ingest import ingest
from curate.scoring import make_scorer, run_scorer
from curate.selectors import Pool, load_recipe, make_selector, select
from curate.selectors.traces import farthest_first
from curate.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


def react(question: str, steps: list[tuple[str, str, str]], reward: bool) -> dict:
    text = "".join(f"Thought: {t}\nAction: {a}\nObservation: {o}\n" for t, a, o in steps)
    return {"instruction": question, "input": "",
            "output": text + f"Observation: Episode finished, reward = {reward}\n"}


SOLUTIONS = [
    {"question": "What is 2 + 3?",
     "a": {"solution": "2 + 3 = 5\nA: 5", "is_correct": True},
     "b": {"solution": "2 + 3 equals 5.\nA: 5", "is_correct": True},
     "c": {"solution": "We add: 2 + 3 = 6\nA: 6", "is_correct": False},
     "d": {"solution": "Two plus three is five.\nA: 5", "is_correct": True}},
    {"question": "What is 4 * 5?",
     "a": {"solution": "4 * 5 = 20\nA: 20", "is_correct": True},
     "b": {"solution": "4 * 5 = 25\nA: 25", "is_correct": False}},
    # three correct answers, two nearly the same: with k=2 the distinct one must be kept
    {"question": "Name a primary colour.",
     "a": {"solution": "Red is a primary colour.", "is_correct": True},
     "b": {"solution": "Red is a primary colour!", "is_correct": True},
     "c": {"solution": "The sea near the harbour was calm and blue in June.",
           "is_correct": True}},
]
TRACES = [
    react("Who wrote Hamlet?", [("I should search Hamlet.", "search[Hamlet]",
                                 "Hamlet is a tragedy by William Shakespeare."),
                                ("The author is Shakespeare.", "finish[William Shakespeare]",
                                 "Correct.")], True),
    react("Where is the Eiffel Tower?", [("I need to search it.", "search[Eiffel Tower]",
                                          "The Eiffel Tower is in Paris, France."),
                                         ("Paris.", "finish[Paris]", "Correct.")], True),
    react("How tall is Mount Kilimanjaro?",
          [("I should search the mountain.", "search[Mount Kilimanjaro]",
            "Mount Kilimanjaro is 5,895 metres tall."),
           ("Maybe search the height again.", "search[Kilimanjaro height feet]",
            "It is 19,341 feet."),
           ("I will answer in miles.", "finish[3 miles]", "Wrong.")], False),
    react("Which river flows through Cairo?",
          [("Search the city.", "search[Cairo]", "Cairo lies on the Nile."),
           ("The answer is the Amazon.", "finish[Amazon]", "Wrong.")], False),
]


@pytest.fixture(scope="module")
def trace_store(tmp_path_factory, tiny):
    """Multi-solution rows, ReAct traces and one unlabelled instruction, with lm and
    steps scores from the tiny model."""
    root = tmp_path_factory.mktemp("traces")
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "solutions.jsonl", SOLUTIONS),
                   write_jsonl(root / "traces.jsonl", TRACES),
                   write_jsonl(root / "plain.jsonl",
                               [{"instruction": "Say hi.", "output": "Hi!"}])])
    run_scorer(store, make_scorer("lm", model=tiny, max_tokens=512))
    run_scorer(store, make_scorer("steps", model=tiny, max_tokens=512))
    return store


def fit(store, method: str, where: str | None = None, **params):
    pool = Pool(store, where)
    try:
        sel = make_selector(method, **params).fit(pool)
        return sel
    finally:
        pool.close()


def outcomes(store, ids) -> dict:
    got = dict(rows(store, "SELECT id, success FROM pairs"))
    return {i: got[i] for i in ids}


def groups(store, ids) -> dict:
    got = dict(rows(store, "SELECT id, prompt FROM pairs"))
    return {i: got[i] for i in ids}


# -------------------------------------------------------------------------------- outcome

def test_outcome_filters(trace_store):
    n_success, n_failed, n_none = rows(trace_store, "SELECT count(*) FILTER (success), "
                                       "count(*) FILTER (NOT success), count(*) FILTER "
                                       "(success IS NULL) FROM pairs")[0]
    assert n_none == 1
    good = fit(trace_store, "outcome", success=True)
    assert len(good.selected_ids_) == n_success
    assert set(outcomes(trace_store, good.selected_ids_).values()) == {True}
    bad = fit(trace_store, "outcome", success=False)
    assert len(bad.selected_ids_) == n_failed
    assert set(outcomes(trace_store, bad.selected_ids_).values()) == {False}
    # rewards: ReAct traces carry 1.0 / 0.0, the multi-solution rows none
    high = fit(trace_store, "outcome", min_reward=0.5)
    reward = dict(rows(trace_store, "SELECT id, reward FROM pairs"))
    assert [reward[i] for i in high.selected_ids_] == [1.0, 1.0]
    # rows without an outcome: excluded by default, kept with a reason when asked
    everything = fit(trace_store, "outcome")
    assert len(everything.selected_ids_) == n_success + n_failed
    with_none = fit(trace_store, "outcome", success=True, missing="include")
    assert len(with_none.selected_ids_) == n_success + n_none
    assert sum("no success (missing=include)" in r for r in with_none.reasons_) == n_none
    with pytest.raises(CurateError, match="missing=include"):
        fit(trace_store, "outcome", min_reward=2.0)
    with pytest.raises(CurateError, match="missing="):
        fit(trace_store, "outcome", missing="maybe")


# --------------------------------------------------------------------- rejection sampling

def test_farthest_first_prefers_the_distinct_vectors():
    v = np.array([[1.0, 0.0], [0.999, 0.045], [0.0, 1.0], [0.7, 0.7]], np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    picked, dist = farthest_first(v, 3)
    assert picked[0] == 3  # the most typical (closest to all others)
    assert set(picked[1:]) == {0, 2} or set(picked[1:]) == {1, 2}
    assert np.isnan(dist[0]) and dist[1] >= dist[2] > 0


def test_rejection_sampling_needs_embeddings_only_to_break_ties(trace_store):
    # k larger than any prompt's correct count: no embeddings needed
    sel = fit(trace_store, "rejection-sampling", k=3)
    assert set(outcomes(trace_store, sel.selected_ids_).values()) == {True}
    with pytest.raises(CurateError, match="curate score embed"):
        fit(trace_store, "rejection-sampling", k=2)


def test_rejection_sampling_keeps_k_correct_diverse_responses(trace_store):
    run_scorer(trace_store, make_scorer("embed", text="response"))
    sel = fit(trace_store, "rejection-sampling", k=2)
    assert set(outcomes(trace_store, sel.selected_ids_).values()) == {True}
    per_prompt: dict = {}
    for i, p in groups(trace_store, sel.selected_ids_).items():
        per_prompt.setdefault(p, []).append(i)
    assert max(len(v) for v in per_prompt.values()) <= 2
    correct_prompts = {p for p, s in rows(trace_store, "SELECT prompt, success FROM pairs") if s}
    assert set(per_prompt) == correct_prompts  # every prompt with a correct answer kept
    colour = dict(rows(trace_store, "SELECT id, response FROM pairs "
                       "WHERE prompt = 'Name a primary colour.'"))
    kept = sorted(colour[i] for i in per_prompt["Name a primary colour."])
    assert "The sea near the harbour was calm and blue in June." in kept
    assert len({k.rstrip("!.") for k in kept}) == 2  # not both near-duplicates
    # with a budget, picks go round-robin: the first picks of every prompt come first
    budgeted = fit(trace_store, "rejection-sampling", k=2, budget=len(per_prompt))
    assert len(set(groups(trace_store, budgeted.selected_ids_).values())) == len(per_prompt)
    # the shipped recipe: rows with outcomes, exact dedup, then the same selector
    recipe = select(trace_store, load_recipe(ROOT / "selectors" / "correct-diverse.yaml"), "rft")
    assert set(outcomes(trace_store, recipe.ids).values()) == {True}
    assert set(groups(trace_store, recipe.ids).values()) == correct_prompts


# ---------------------------------------------------------------------------------- grape

def test_grape_picks_the_lowest_nll_response_per_prompt(trace_store, tiny):
    sel = fit(trace_store, "grape", model=tiny, where="source = 'solutions'")
    best = dict(rows(trace_store, """
        SELECT prompt, arg_min(id, nll) FROM pairs JOIN scores_lm USING (id)
        WHERE source = 'solutions' GROUP BY prompt"""))
    assert sorted(sel.selected_ids_) == sorted(best.values())
    only_correct = fit(trace_store, "grape", model=tiny, correct_only=True,
                       where="source = 'solutions'")
    assert set(outcomes(trace_store, only_correct.selected_ids_).values()) == {True}
    best_correct = dict(rows(trace_store, """
        SELECT prompt, arg_min(id, nll) FROM pairs JOIN scores_lm USING (id)
        WHERE source = 'solutions' AND success GROUP BY prompt"""))
    assert sorted(only_correct.selected_ids_) == sorted(best_correct.values())
    assert all(r.startswith("nll ") for r in sel.reasons_)
    with pytest.raises(CurateError, match="curate score lm --model smollm2-135m"):
        fit(trace_store, "grape", model="smollm2-135m")


# ------------------------------------------------------------------------ expert failures

def test_step_losses_match_the_lm_scorer_on_the_last_turn(trace_store):
    got = rows(trace_store, """
        SELECT s.step_nll[-1], l.nll, s.step_tokens[-1], l.response_tokens, s.step_count,
               len(list_filter(e.messages, lambda m: m.role = 'assistant'))
        FROM scores_steps s JOIN scores_lm l USING (id) JOIN examples e USING (id)""")
    assert len(got) == 9 + 4 + 1  # every row scored by both
    for last, nll, tokens, response_tokens, count, turns in got:
        assert count == turns
        assert tokens == response_tokens
        assert last == pytest.approx(nll, abs=1e-2)


def test_expert_failures_mask_the_harmful_steps_of_failed_traces(trace_store, tiny):
    where = "source = 'traces'"
    sel = fit(trace_store, "expert-failures", model=tiny, where=where, threshold=100.0)
    masks = {r["id"]: r for r in sel.masks_.to_pylist()}
    turns = dict(rows(trace_store, "SELECT id, len(list_filter(messages, lambda m: "
                      "m.role = 'assistant')) FROM examples"))
    state = outcomes(trace_store, sel.selected_ids_)
    assert sorted(state.values()) == [False, False, True, True]
    assert set(masks) == {i for i, s in state.items() if not s}  # successes: no mask
    for i, m in masks.items():
        assert len(m["turns"]) == turns[i]
        assert m["turns"][-1] is False  # the failed trace's final answer
        assert all(m["turns"][:-1])  # a threshold nothing passes: only the final step
        assert "final step" in m["reason"]
    # a threshold every step passes leaves nothing to train in failures: only successes
    strict = fit(trace_store, "expert-failures", model=tiny, where=where, threshold=-1.0)
    assert set(outcomes(trace_store, strict.selected_ids_).values()) == {True}
    assert strict.masks_.num_rows == 0
    # calibrated on the successful traces' steps; prefix mode never trains after a mask
    auto = fit(trace_store, "expert-failures", model=tiny, where=where, mode="prefix",
               keep_successes=False)
    for m in auto.masks_.to_pylist():
        flags = m["turns"]
        assert flags[-1] is False and flags == sorted(flags, reverse=True)
    with pytest.raises(CurateError, match="curate score steps --model smollm2-135m"):
        fit(trace_store, "expert-failures", model="smollm2-135m", where=where)
    with pytest.raises(CurateError, match="step_score"):
        fit(trace_store, "expert-failures", step_score="nll", where=where)


def test_expert_failure_masks_are_saved_with_the_selection(trace_store, tiny):
    sel = select(trace_store, "expert-failures", "ef", where="source = 'traces'", model=tiny,
                 threshold=100.0)
    assert sel.masks is not None and sel.masks.num_rows == 2
    saved = rows(trace_store, "SELECT id, turns FROM selection_masks WHERE selection = 'ef'")
    assert sorted(saved) == sorted((m["id"], m["turns"]) for m in sel.masks.to_pylist())


# ------------------------------------------------------------------------- real corpora

@pytest.mark.corpora
def test_real_fireact_and_gsm8k_solutions(tmp_path, tiny):
    fireact = json.loads(corpora_path("fireact", "multitask_multimethod.alpaca.json").read_text())
    failed = [r for r in fireact if "reward = False" in r["output"]][:6]
    succeeded = [r for r in fireact if "reward = True" in r["output"]][:18]
    lines = corpora_path("gsm8k", "example_model_solutions.jsonl").read_text().splitlines()[:8]
    store = Store(tmp_path / "store")
    ingest(store, [write_jsonl(tmp_path / "fireact.jsonl", failed + succeeded),
                   write_jsonl(tmp_path / "gsm8k_solutions.jsonl", lines)])
    # GSM8K: one group per question, several solutions; keep only correct ones, <= k each
    rs = fit(store, "rejection-sampling", k=4, where="source = 'gsm8k_solutions'")
    assert set(outcomes(store, rs.selected_ids_).values()) == {True}
    per = list(groups(store, rs.selected_ids_).values())
    assert max(per.count(p) for p in per) <= 4
    assert len(set(per)) == rows(store, "SELECT count(DISTINCT prompt) FROM pairs WHERE "
                                 "source = 'gsm8k_solutions' AND success")[0][0]
    by_meta = fit(store, "rejection-sampling", k=4, where="source = 'gsm8k_solutions'",
                  group="json_extract_string(meta, '$.ground_truth')")
    assert sorted(by_meta.selected_ids_) == sorted(rs.selected_ids_)
    fails = fit(store, "outcome", success=False, where="source = 'fireact'")
    assert len(fails.selected_ids_) == 6
    # GRAPE over the solutions, expert failures over the traces
    run_scorer(store, make_scorer("lm", model=tiny, max_tokens=512),
               where="source = 'gsm8k_solutions'")
    grape = fit(store, "grape", model=tiny, correct_only=True, where="source = 'gsm8k_solutions'")
    assert len(grape.selected_ids_) == len(set(per))
    run_scorer(store, make_scorer("steps", model=tiny, max_tokens=512), where="source = 'fireact'")
    ef = fit(store, "expert-failures", model=tiny, where="source = 'fireact'")
    turns = dict(rows(store, "SELECT id, len(list_filter(messages, lambda m: "
                      "m.role = 'assistant')) FROM examples"))
    assert ef.masks_.num_rows >= 1
    for m in ef.masks_.to_pylist():
        assert len(m["turns"]) == turns[m["id"]] and m["turns"][-1] is False
        assert any(m["turns"])
    assert set(outcomes(store, [m["id"] for m in ef.masks_.to_pylist()]).values()) == {False}
    # per-step influence toward the successful traces marks the harmful steps instead
    from curate.finetune import prepare_scorer
    from curate.scoring.influence import StepInfluenceScorer

    select(store, "outcome", "solved", where="source = 'fireact'", success=True)
    scorer = StepInfluenceScorer(store=store, target="solved", model=tiny, warmup=8,
                                 checkpoints=1, dim=256, max_tokens=512, lora_r=4)
    prepare_scorer(store, scorer)  # its warm-up run
    run_scorer(store, scorer, where="source = 'fireact' AND NOT success")
    got = rows(store, "SELECT step_influence, len(list_filter(messages, lambda m: "
                      "m.role = 'assistant')) FROM scores_step_influence JOIN examples "
                      "USING (id)")
    assert len(got) == 6 and all(len(v) == n for v, n in got)
    assert all(-1 <= x <= 1 for v, _ in got for x in v if x is not None)
    values = dict(rows(store, "SELECT id, step_influence FROM scores_step_influence"))
    middle = float(np.median([x for v in values.values() for x in v if x is not None]))
    by_influence = fit(store, "expert-failures", where="source = 'fireact' AND NOT success",
                       keep_successes=False, step_score="step_influence.step_influence",
                       harmful="low", threshold=middle)
    expect = {i: [x is not None and x >= middle for x in v[:-1]] + [False]
              for i, v in values.items()}
    assert {m["id"]: m["turns"] for m in by_influence.masks_.to_pylist()} == \
        {i: t for i, t in expect.items() if any(t)}
