"""Warm-up runs that scorers ask for: the fine-tune a gradient scorer (influence) takes
its snapshots from, trained here so that the scorer itself never trains.

A scorer that needs one says so with `warmup_plan()` (a random selection of N rows and
the LoRA options); `prepare_scorer` saves that selection once, trains (or reuses) the
run like any `curate finetune` run, hands its id to the scorer and prepares it. A rerun
finds the selection and the finished run and trains nothing.
"""

from __future__ import annotations

from curate.finetune.train import TrainConfig, finetune


def prepare_scorer(store, scorer, progress=None) -> None:
    """Make `scorer` ready to score `store`: train the warm-up it asks for, if any, then
    `scorer.prepare(progress)` (a no-op for scorers that read nothing from the store).
    `progress` follows the warm-up's training steps."""
    plan = scorer.warmup_plan()
    if plan is not None:
        from curate.selectors import select

        name = plan["selection"]
        if not (store.folder("selections") / name / "manifest.json").is_file():
            select(store, "random", name, budget=plan["rows"], seed=plan["seed"])
        scorer.run_id = finetune(store, name, TrainConfig(**plan["train"]),
                                 progress=progress).run_id
    scorer.prepare(progress)
