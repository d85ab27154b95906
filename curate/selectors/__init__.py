"""Selectors: choose the subset. Each is a scikit-learn style estimator (see base.py);
`select` runs one, or a recipe of steps, on a store and saves the `Selection`.

    random             seeded uniform sample
    topk / threshold   by any score column or SQL expression
    longest            longest responses
    length             token-length filter
    kmeans             k-means diversity: balanced (kMQ), proportional, sensitivity
                       sampling, quality-weighted refinement (Diversify and Conquer)
    facility-location  submodular coverage (+ quality) on a sparse k-NN graph
    log-det            submodular log-determinant (DPP MAP) diversity (+ quality)
    similarity         closest to a target set: mean cosine, or round-robin over the
                       target's examples (RDS+)
    deita              score-first, diversity-aware (DEITA): by quality, each row taken
                       only if its cosine to every row taken is below a threshold
    semdedup           semantic dedup within k-means clusters (SemDeDup)
    exact-dedup        exact / normalized-text dedup
    outcome            traces / labelled responses by success and reward
    rejection-sampling per prompt, up to k correct responses, most diverse first
    grape              per prompt, the response the model to train finds most probable
    expert-failures    failed traces with their harmful steps masked (turn masks)
    token-clean        every pool example, uninformative response tokens masked (token
                       cleaning against a reference run, or Q-Tuning's EU-plane triage)
"""

from __future__ import annotations

import inspect
import time

from curate.errors import CurateError
from curate.selectors.base import Budget, Pool, Selector
from curate.selectors.baselines import (LengthFilter, LongestSelector, RandomSelector,
                                        ThresholdSelector, TopKSelector)
from curate.selectors.deduplicators import ExactDeduplicator, SemanticDeduplicator
from curate.selectors.diversity import (FacilityLocationSelector, KMeansSelector,
                                        LogDeterminantSelector)
from curate.selectors.recipe import Plan, Step, load_recipe, run_plan, validate
from curate.selectors.similarity import DeitaSelector, SimilaritySelector
from curate.selection import (Selection, check_name, delete_selection,
                              list_selections, save_selection)
from curate.selectors.token_clean import TokenCleaner
from curate.selectors.traces import (ExpertFailureSelector, GrapeSelector, OutcomeSelector,
                                     RejectionSampler)

SELECTORS: dict[str, type[Selector]] = {
    c.name: c for c in (RandomSelector, TopKSelector, ThresholdSelector, LongestSelector,
                        LengthFilter, KMeansSelector, FacilityLocationSelector,
                        LogDeterminantSelector, SimilaritySelector, DeitaSelector,
                        SemanticDeduplicator, ExactDeduplicator,
                        OutcomeSelector, RejectionSampler, GrapeSelector, ExpertFailureSelector,
                        TokenCleaner)
}

__all__ = ["SELECTORS", "Budget", "Plan", "Pool", "Selection", "Selector", "Step",
           "delete_selection", "list_selections", "load_recipe", "make_selector", "select"]


def make_selector(method: str, **params) -> Selector:
    """A selector by method name; unknown names and options fail before any work."""
    if method not in SELECTORS:
        raise CurateError(f"unknown selection method {method!r}\n  fix: use one of "
                          f"{', '.join(SELECTORS)}")
    cls = SELECTORS[method]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    wrong = [k for k in params if k not in accepted]
    if wrong:
        raise CurateError(f"{method} takes no option {', '.join(map(repr, wrong))}\n  fix: its "
                          f"options are {', '.join(accepted)}")
    return cls(**params)


def select(store, plan: Plan | str, name: str, *, where: str | None = None,
           embed: str | None = None, overwrite: bool = False, progress=None,
           **params) -> Selection:
    """Run a method (`plan` = its name, `params` its options) or a recipe plan on the
    store and save the result as selection `name`."""
    check_name(name)
    if isinstance(plan, str):
        plan = validate(Plan([Step("select", method=plan, params=params)], where, embed))
    else:
        plan.where = where if where is not None else plan.where
        plan.embed = embed if embed is not None else plan.embed
    if not overwrite and (store.folder("selections") / name).exists():
        raise CurateError(f"a selection named {name!r} exists\n  fix: choose another "
                          "--name, or pass --overwrite to replace it")
    started = time.time()
    result = run_plan(store, plan, progress)
    try:
        chosen = result.selector
        last = plan.steps[-1]
        tokens = None
        try:
            tokens = int(result.pool.tokens()[chosen.ranking_].sum())
        except CurateError:
            pass  # no token counts in this store: the manifest says null
        params_out = ({"steps": result.log} if plan.text is not None
                      else chosen.get_params())
        if result.masks is not None and result.mask_model:
            params_out["mask_model"] = result.mask_model
        selection = Selection(
            name=name, method=plan.method, params=params_out,
            budget=str(Budget.parse(last.params["budget"])) if last.params.get("budget")
            is not None else "all",
            ids=chosen.selected_ids_, gains=chosen.gains_, reasons=chosen.reasons_,
            pool_size=result.pool_size, fingerprint=result.pool.fingerprint(),
            pool_where=plan.where, tokens=tokens, dropped=result.dropped, recipe=plan.text,
            seconds=time.time() - started, masks=result.masks)
    finally:
        result.pool.close()
    save_selection(store, selection, overwrite=overwrite)
    return selection
