"""Token cleaning: influence against a reference run (fixed and self-evolving), Q-Tuning's
error x uncertainty triage, the masks it saves and what fine-tuning does with them. On the
tiny Llama of test_finetune; one slow test runs the packaged SmolLM2 on real rows."""

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from conftest import corpora_path, rows, write_jsonl
from curate.errors import CurateError
from curate.finetune import TrainConfig, encode, finetune
from curate.ingest import ingest
from curate.selectors import make_selector, select
from curate.selectors.pool import Pool
from curate.selectors.recipe import Plan, Step, validate
from curate.selection import load_masks
from curate.selectors.token_clean import neighbor_scores, quadrants
from curate.store import Store
from test_finetune import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE = "Zebra violin marmalade quantum"


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory, tiny):
    """30 trusted sums (`trusted`, a reference run on them) and 12 pool sums whose answers
    end in unrelated words the reference never saw."""
    root = tmp_path_factory.mktemp("token-clean")
    trusted = [{"instruction": f"Add {a} and {b}.", "output": f"The sum of {a} and {b} is {a + b}."}
               for a, b in zip(range(3, 63, 2), range(30, 0, -1))]
    pool = [{"instruction": f"Add {a} and {b}.",
             "output": f"The sum of {a} and {b} is {a + b}. {NOISE}."}
            for a, b in zip(range(100, 124, 2), range(12))]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "trusted.jsonl", trusted),
                   write_jsonl(root / "pool.jsonl", pool)])
    select(store, "random", "trusted", where="source = 'trusted'", budget=30)
    run = finetune(store, "trusted", tiny_config(tiny, max_steps=25))
    store.reference = run.run_id
    return store


def masks_by_id(store, name):
    return {r["id"]: np.asarray(r["tokens"]) for r in load_masks(store, name).to_pylist()}


def test_keeps_the_tokens_the_reference_learned(clean_store, tokenizer):
    sel = select(clean_store, "token-clean", "clean", where="source = 'pool'",
                 reference=clean_store.reference, keep=0.6)
    assert len(sel.ids) == 12 and sel.params["mask_model"]
    masks = masks_by_id(clean_store, "clean")
    responses = dict(rows(clean_store, "SELECT id, response FROM pairs WHERE source = 'pool'"))
    assert set(masks) == set(responses)
    noise_kept = template_kept = noise_total = template_total = 0
    for i, mask in masks.items():
        ids = tokenizer(responses[i], add_special_tokens=False)["input_ids"]
        assert len(mask) == len(ids) + 1  # content + end-of-turn: the mask contract
        assert mask.sum() == math.ceil(0.6 * len(mask))  # keep fraction, per example
        head = len(tokenizer(responses[i].split(f" {NOISE}")[0], add_special_tokens=False)
                   ["input_ids"])
        template_kept += mask[:head].sum()
        template_total += head
        noise_kept += mask[head:-1].sum()
        noise_total += len(mask) - 1 - head
    # the reference learned the answer template, not the unrelated words
    assert template_kept / template_total > 0.8 and noise_kept / noise_total < 0.2
    assert rows(clean_store, "SELECT count(*) FROM selection_masks WHERE selection = 'clean' "
                             "AND reason LIKE 'token-clean (influence): kept %'") == [(12,)]


def test_global_scope_and_budget(clean_store):
    sel = select(clean_store, "token-clean", "clean-global", where="source = 'pool'",
                 reference=clean_store.reference, keep="50%", scope="global", budget=5)
    assert len(sel.ids) == 5
    masks = masks_by_id(clean_store, "clean-global")
    assert set(masks) <= set(sel.ids)
    # ranked by mean influence: the first pick gained the most
    assert list(sel.gains) == sorted(sel.gains, reverse=True)


def test_finetuning_on_the_cleaned_selection_trains_fewer_tokens(clean_store, tiny, tokenizer):
    select(clean_store, "token-clean", "clean-ft", where="source = 'pool'",
           reference=clean_store.reference, keep=0.5)
    select(clean_store, "random", "pool-all", where="source = 'pool'", budget=12)
    config = tiny_config(tiny, max_steps=1)
    plain = finetune(clean_store, "pool-all", config)
    cleaned = finetune(clean_store, "clean-ft", config)
    masked = sum(int((m == 0).sum()) for m in masks_by_id(clean_store, "clean-ft").values())
    assert masked > 0 and cleaned.tokens == plain.tokens - masked


def test_recipe_step_after_token_clean_keeps_masks_of_kept_ids(clean_store):
    plan = validate(Plan([Step("select", method="token-clean",
                               params={"reference": clean_store.reference, "keep": 0.6}),
                          Step("select", method="random", params={"budget": 4, "seed": 1})],
                         where="source = 'pool'", text="steps: [token-clean, random]"))
    sel = select(clean_store, plan, "clean-then-random")
    assert len(sel.ids) == 4
    assert set(masks_by_id(clean_store, "clean-then-random")) == set(sel.ids)
    assert sel.params["mask_model"] and sel.manifest()["masked"] == 4


def test_self_evolving_rounds_train_new_references(clean_store):
    from curate.finetune.rounds import token_clean_rounds

    # the estimator never trains: rounds without their references fail before any work
    with pytest.raises(CurateError, match="trains the reference of every later round"):
        select(clean_store, "token-clean", "x", where="source = 'pool'",
               reference=clean_store.reference, rounds=2)
    sel = token_clean_rounds(clean_store, "clean-evolve", 2, round_steps=3,
                             where="source = 'pool'", reference=clean_store.reference,
                             keep=0.6)
    assert len(sel.params["round_references"]) == 1
    assert len(sel.ids) == 12 and len(masks_by_id(clean_store, "clean-evolve")) == 12
    (name, masked), = rows(clean_store, "SELECT name, masked FROM selections "
                                        "WHERE name LIKE 'tc-%-r1'")
    assert masked == 6  # the first chunk, cleaned, plus the trusted slice unmasked
    assert rows(clean_store, f"SELECT size, steps FROM selections JOIN runs ON "
                             f"runs.selection = selections.name WHERE name = '{name}'") \
        == [(36, 3)]
    # a rerun reuses the round's finished run
    again = token_clean_rounds(clean_store, "clean-evolve", 2, round_steps=3,
                               where="source = 'pool'", reference=clean_store.reference,
                               keep=0.6, overwrite=True)
    assert again.ids == sel.ids
    assert rows(clean_store, f"SELECT count(*) FROM runs WHERE selection = '{name}'") == [(1,)]


def test_options_fail_clearly(clean_store):
    pool = Pool(clean_store, "source = 'pool'")
    try:
        with pytest.raises(CurateError, match="no --reference"):
            make_selector("token-clean").fit(pool)
        with pytest.raises(CurateError, match="not a fraction"):
            make_selector("token-clean", reference="x", keep=1.5).fit(pool)
        with pytest.raises(CurateError, match="scope='pool'"):
            make_selector("token-clean", reference="x", scope="pool").fit(pool)
        with pytest.raises(CurateError, match="no finished run 'nope'"):
            make_selector("token-clean", reference="nope").fit(pool)
        with pytest.raises(CurateError, match="run `curate score lm` first"):
            make_selector("token-clean", strategy="q-tuning").fit(pool)
    finally:
        pool.close()


# ------------------------------------------------------------------- q-tuning
def test_quadrants_on_constructed_scores():
    error = np.array([10.0, 9.0, 1.0, 2.0, 5.0, 6.0])
    uncertainty = np.array([10.0, 1.0, 2.0, 9.0, 5.0, 6.0])
    # median split: 1 noise (high, high), 2 misconception (high, low), 3 redundant
    # (low, low), 4 calibration (low, high)
    assert quadrants(error, uncertainty, 0.5).tolist() == [1, 2, 3, 4, 3, 1]
    # tighter thresholds (quartiles) leave the middle unclassified
    assert quadrants(error, uncertainty, 0.25).tolist() == [1, 2, 3, 4, 0, 0]
    s = neighbor_scores(np.log([1.0, 3.0, 5.0]), 0.5)
    np.testing.assert_allclose(s, [0.5 + 1.0, 1.5 + 1.5, 2.5 + 2.0])


@pytest.fixture(scope="module")
def plane_store(tmp_path_factory):
    """16 examples whose prompts carry a constructed error and uncertainty: a 4 x 4 grid."""
    root = tmp_path_factory.mktemp("q-tuning")
    recs = [{"instruction": f"E {e} U {u}", "output": f"Answer with error {e} and doubt {u}."}
            for e in (1, 2, 3, 4) for u in (1, 2, 3, 4)]
    store = Store(root / "store")
    ingest(store, [write_jsonl(root / "plane.jsonl", recs)])
    return store


ERROR = "CAST(split_part(prompt, ' ', 2) AS DOUBLE)"
DOUBT = "CAST(split_part(prompt, ' ', 4) AS DOUBLE)"


def test_q_tuning_keeps_misconceptions_pruned_and_calibration_whole(plane_store, tiny):
    sel = select(plane_store, "token-clean", "qt", strategy="q-tuning", error=ERROR,
                 uncertainty=DOUBT, keep=0.5, model=str(tiny))
    prompts = dict(rows(plane_store, "SELECT id, prompt FROM pairs"))
    kept = {prompts[i] for i in sel.ids}
    # median split: error >= 3 is high, < 3 low; the same for uncertainty
    assert kept == {f"E {e} U {u}" for e in (3, 4) for u in (1, 2)} | \
        {f"E {e} U {u}" for e in (1, 2) for u in (3, 4)}
    masks = masks_by_id(plane_store, "qt")
    assert {prompts[i] for i in masks} == {f"E {e} U {u}" for e in (3, 4) for u in (1, 2)}
    for mask in masks.values():
        assert mask.sum() == math.ceil(0.5 * len(mask))
    reasons = dict(rows(plane_store, "SELECT id, reason FROM selection_members "
                                     "WHERE selection = 'qt'"))
    assert all(reasons[i].startswith("Q2 misconception") for i in masks)
    # a budget tightens the thresholds by bisection: the corners of the plane remain
    small = select(plane_store, "token-clean", "qt-2", strategy="q-tuning", error=ERROR,
                   uncertainty=DOUBT, keep=0.5, model=str(tiny), budget=2)
    assert {prompts[i] for i in small.ids} == {"E 4 U 1", "E 1 U 4"}


def test_q_tuning_prunes_the_most_surprising_tokens(plane_store, tiny, tokenizer):
    from curate.models import load_causal_lm
    from curate.scoring.lm import LMScorer

    select(plane_store, "token-clean", "qt-tokens", strategy="q-tuning", error=ERROR,
           uncertainty=DOUBT, keep=0.5, neighbor=0.0, model=str(tiny), overwrite=True)
    masks = masks_by_id(plane_store, "qt-tokens")
    messages = dict(rows(plane_store, "SELECT id, messages FROM examples"))
    model, tok = load_causal_lm(str(tiny))
    scorer = LMScorer.with_model(model, tok)
    scores = scorer.score(pa.table({"messages": [messages[i] for i in masks]}))
    for mask, losses in zip(masks.values(), scores["token_losses"].to_pylist()):
        losses = np.asarray(losses, np.float64)
        assert losses[mask == 1].max() <= losses[mask == 0].min()  # lambda 0: plain token loss


@pytest.mark.slow
@pytest.mark.corpora
def test_token_clean_with_the_packaged_smollm2(tmp_path):
    with corpora_path("gsm8k", "train.jsonl").open() as f:
        recs = [json.loads(next(f)) for _ in range(4)]
    store = Store(tmp_path / "store")
    ingest(store, [write_jsonl(tmp_path / "gsm8k.jsonl", recs)])
    select(store, "random", "warmup", budget=2, seed=0)
    # short sequences keep it quick: tokens past a truncated response's head stay trained
    run = finetune(store, "warmup", TrainConfig(max_steps=1, max_tokens=96))
    sel = select(store, "token-clean", "cleaned", reference=run.run_id, keep=0.7, max_tokens=96)
    assert len(sel.ids) == 4 and sel.params["mask_model"] == "smollm2-135m"
    messages = dict(rows(store, "SELECT id, messages FROM examples"))
    masks = masks_by_id(store, "cleaned")
    assert len(masks) == 4 and max(len(m) for m in masks.values()) > 95
    assert all(m[95:].all() for m in masks.values())  # tails past the scored 95 tokens
    # the masks fit the model's own encoding of each example
    encode(tokenizer_of(run), [messages[i] for i in masks], 4096,
           token_masks=dict(enumerate(masks.values())))


def tokenizer_of(run):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(run.path / "adapter"))


def test_q_tuning_on_lm_scores_uses_their_token_losses(plane_store, tiny):
    """With the lm scorer run on the pool, q-tuning reads ppl, entropy and the token
    losses from `scores_lm` (the scorer's model is the base model)."""
    from curate.scoring import make_scorer, run_scorer
    from curate.selectors.token_clean import _keep_lowest

    run_scorer(plane_store, make_scorer("lm", model=str(tiny)))
    sel = select(plane_store, "token-clean", "qt-lm", strategy="q-tuning", keep=0.5)
    assert sel.params["mask_model"] == str(tiny) and len(sel.ids) >= 4
    losses = dict(rows(plane_store, "SELECT id, token_losses FROM scores_lm"))
    masks = masks_by_id(plane_store, "qt-lm")
    assert masks
    for i, mask in masks.items():
        expected = _keep_lowest(neighbor_scores(np.asarray(losses[i], np.float32), 0.5), 0.5)
        assert mask.tolist() == expected.tolist()
