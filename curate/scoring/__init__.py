"""Scorers: per-example signals for selection, cached per configuration and resumable.

    heuristics   lengths (characters, tokens), turns, distinct-n, repetition; trace steps,
                 tool calls, outcome
    embed        sentence embeddings (+ FAISS index) of prompt, response or all
    lm           causal-LM response perplexity with / without the prompt, IFD, entropy,
                 token counts, per-token response losses
    steps        per-assistant-turn (trace step) mean token loss under a causal LM
    influence    LESS / TracIn gradient influence on a target (LoRA warm-up, projected
                 per-example gradients), gradient norm
    step_influence  the same per trace step (assistant turn): harmful steps of failed
                 traces for expert-failures
"""

from __future__ import annotations

from curate.errors import CurateError
from curate.scoring.base import ScoreReport, Scorer, run_scorer
from curate.scoring.embed import EmbedScorer
from curate.scoring.heuristics import HeuristicsScorer
from curate.scoring.influence import InfluenceScorer, StepInfluenceScorer
from curate.scoring.lm import LMScorer
from curate.scoring.steps import StepLossScorer

SCORERS: dict[str, type[Scorer]] = {s.name: s for s in (HeuristicsScorer, EmbedScorer, LMScorer,
                                                          StepLossScorer, InfluenceScorer,
                                                          StepInfluenceScorer)}

__all__ = ["SCORERS", "ScoreReport", "Scorer", "make_scorer", "run_scorer", "scorer_for",
           "scorer_from_spec"]


def make_scorer(name: str, **options) -> Scorer:
    """A scorer by name; an unknown name fails before any work, listing the valid ones."""
    if name not in SCORERS:
        raise CurateError(f"unknown scorer {name!r}\n  fix: use one of {', '.join(SCORERS)}")
    import inspect

    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(SCORERS[name].__init__).parameters
    wrong = [k for k in options if k not in accepted]
    if wrong:
        raise CurateError(f"scorer {name!r} takes no option {', '.join(wrong)}\n  fix: its "
                          f"options are {', '.join(p for p in accepted if p != 'self')}")
    return SCORERS[name](**options)


def scorer_for(store, name: str, **options) -> Scorer:
    """`make_scorer` for scoring `store`: a scorer that reads the store itself
    (`needs_store`, e.g. influence) is given it, and its batch size is capped at its
    `max_batch_size`. Such a scorer still needs `curate.finetune.prepare_scorer` before
    `run_scorer`."""
    cls = SCORERS.get(name)
    if cls is not None and cls.needs_store:
        options["store"] = store
    if cls is not None and cls.max_batch_size and options.get("batch_size"):
        options["batch_size"] = min(options["batch_size"], cls.max_batch_size)
    return make_scorer(name, **options)


def scorer_from_spec(store, spec: str | dict) -> tuple[Scorer, str | None]:
    """(scorer, where) from a scorer spec: a name (`"embed"`) or a mapping
    `{"name": "embed", "where": SQL, ...the scorer's options}` (a flow's `scorers:` entry,
    `curate run --score`, `curate score`, `Store.score`), made for `store` by `scorer_for`.
    The spec itself is not changed."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    if not name:
        raise CurateError(f"scorer spec {spec!r} has no name\n  fix: e.g. {{name: embed, "
                          "text: prompt}")
    where = spec.pop("where", None)
    return scorer_for(store, name, **spec), where
