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
    minhash-dedup      fuzzy dedup by MinHash LSH over word shingles (Jaccard threshold)
    decontaminate      drop rows that share a word n-gram (13) with an evaluation set, or
                       sit within an embedding cosine of one
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
from dataclasses import dataclass, field

from curate.errors import CurateError
from curate.selectors.base import Budget, Selector
from curate.selectors.pool import Pool
from curate.selectors.baselines import (LengthFilter, LongestSelector, RandomSelector,
                                        ThresholdSelector, TopKSelector)
from curate.selectors.decontaminate import Decontaminator
from curate.selectors.deduplicators import (ExactDeduplicator, MinHashDeduplicator,
                                            SemanticDeduplicator)
from curate.selectors.diversity import (FacilityLocationSelector, KMeansSelector,
                                        LogDeterminantSelector)
from curate.selectors.recipe import (Plan, Step, load_recipe, packaged_recipes, resolve_recipe,
                                     run_plan, validate)
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
                        SemanticDeduplicator, ExactDeduplicator, MinHashDeduplicator,
                        Decontaminator,
                        OutcomeSelector, RejectionSampler, GrapeSelector, ExpertFailureSelector,
                        TokenCleaner)
}

__all__ = ["SELECTORS", "Budget", "Plan", "Pool", "Selection", "SelectionSpec", "Selector",
           "SpecWords", "Step", "delete_selection", "list_selections", "load_recipe",
           "make_selector", "packaged_recipes", "parse_selection", "resolve_recipe", "select"]


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


def select(store, plan: Plan | Selector | str, name: str, *, where: str | None = None,
           embed: str | None = None, overwrite: bool = False, progress=None,
           **params) -> Selection:
    """Run a method (`plan` = its name, `params` its options), an estimator (a Selector,
    fitted here on the pool) or a recipe plan on the store and save the result as
    selection `name`."""
    check_name(name)
    if isinstance(plan, Selector):
        if params:
            raise CurateError(f"options {', '.join(params)} go to the estimator's constructor"
                              f"\n  fix: make_selector({plan.name!r}, **options)")
        plan = validate(Plan([Step("select", method=plan.name, params=plan.get_params(),
                                   selector=plan)], where, embed))
    elif isinstance(plan, str):
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


@dataclass(frozen=True)
class SpecWords:
    """How an interface spells a selection's parts, for `parse_selection`'s messages
    (the defaults: a flow's selection spec)."""
    name_fix: str = "add name: NAME"
    method: str = "method"
    recipe: str = "recipe"
    either_fix: str = "e.g. {recipe: selectors/dedup.yaml} or {method: random, budget: 5%}"
    show_spec: bool = True  # name the spec in messages (a flow has several)


@dataclass
class SelectionSpec:
    """A selection to make: `plan` (a recipe's checked Plan, or a method name) and what
    `select` takes with it."""
    name: str
    plan: Plan | str
    where: str | None = None
    embed: str | None = None
    params: dict = field(default_factory=dict)  # the method's options, budget included

    @property
    def method(self) -> str | None:
        """The method name; None for a recipe."""
        return self.plan if isinstance(self.plan, str) else None

    def run(self, store, *, overwrite: bool = False, progress=None) -> Selection:
        """`select` it on the store and save it (see `select`)."""
        return select(store, self.plan, self.name, where=self.where, embed=self.embed,
                      overwrite=overwrite, progress=progress, **self.params)


def parse_selection(spec: dict, words: SpecWords = SpecWords()) -> SelectionSpec:
    """A selection spec `{name, recipe | method, budget, where, embed, params, ...}` as
    `select` takes it. The recipe (a path or a packaged recipe's name, see
    `resolve_recipe`) is loaded and checked, `budget` overriding its own; for a method,
    the options are `params` and every other key (those winning), `budget` among them.
    A missing name, or a spec with both or neither of recipe and method, fails in the
    words of the interface that took it (`words`). The spec itself is not changed."""
    spec = dict(spec)
    name = spec.pop("name", None)
    if not name:
        what = f"selection spec {spec!r} has no name" if words.show_spec \
            else "a selection needs a name"
        raise CurateError(f"{what}\n  fix: {words.name_fix}")
    recipe, method = spec.pop("recipe", None), spec.pop("method", None)
    if bool(recipe) == bool(method):
        where = f"selection {name!r}: " if words.show_spec else ""
        raise CurateError(f"{where}give either {words.method} or {words.recipe}, not both or "
                          f"neither\n  fix: {words.either_fix}")
    budget, where, embed = spec.pop("budget", None), spec.pop("where", None), \
        spec.pop("embed", None)
    params = {**(spec.pop("params", None) or {}), **spec}
    if recipe:
        return SelectionSpec(name, load_recipe(recipe, budget=budget), where, embed, params)
    if budget is not None:
        params["budget"] = budget
    return SelectionSpec(name, method, where, embed, params)
