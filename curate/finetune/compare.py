"""Rank selections by what a model trained on them can do: fine-tune on each selection
with the same hyper-parameters and several seeds, evaluate every run on one target, and
print a leaderboard (mean +- std of target NLL and accuracy, delta against a baseline
with Welch's t-test, wall time per arm), saved as JSON and a PNG plot.

    <store>/compare/<compare_id>/leaderboard.json, leaderboard.png
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.store import Store, publish, write_atomic


def compare(store: Store, target: str, selections: list[str], seeds: int = 3,
            config=None, baseline: str | None = None, accuracy: bool = False,
            max_new_tokens: int = 256, progress=None) -> dict:
    """Fine-tune and evaluate every (selection, seed); returns the leaderboard (also
    written under <store>/compare/). `baseline` defaults to the first selection whose
    name starts with "random"."""
    from curate.finetune.evaluate import evaluate
    from curate.targets import load_target
    from curate.finetune.train import TrainConfig, finetune
    from curate.selection import list_selections

    config = config or TrainConfig()
    manifests = {m["name"]: m for m in list_selections(store.require())}
    missing = [s for s in selections if s not in manifests]
    if missing:
        raise CurateError(f"no selection {', '.join(map(repr, missing))}\n  fix: use one of "
                          f"{', '.join(sorted(manifests)) or '(none: run `curate select`)'}")
    empty = [s for s in selections if not manifests[s]["size"]]
    if empty:
        raise CurateError(f"selection {', '.join(empty)} is empty: nothing to train on")
    if len(set(selections)) != len(selections):
        raise CurateError("a selection is listed twice")
    if baseline is None:
        baseline = next((s for s in selections if s.startswith("random")), None)
    elif baseline not in selections:
        raise CurateError(f"baseline {baseline!r} is not one of the compared selections")
    tgt = load_target(store, target)  # fails early on a bad target
    notes = _budget_notes(manifests, selections)  # reported with the leaderboard
    from curate.selectors.decontaminate import selection_overlap

    for name in selections:  # warned once, before any training; evaluate's are held back
        found = selection_overlap(store, name, tgt)
        if found:
            warnings.warn(found.message(), stacklevel=2)
            if found.ngram_rows:
                notes.append(f"{name}: {found.ngram_rows} training examples share a "
                             f"{found.ngram}-word n-gram with the target (contamination; "
                             f"fix: curate decontaminate --against {target})")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    started = time.time()

    base = evaluate(store, target, model=config.model, accuracy=accuracy,
                    max_new_tokens=max_new_tokens)
    arms = []
    for name in selections:
        runs = []
        for seed in seed_list:
            if progress:
                progress(f"{name} seed {seed}")
            t0 = time.time()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                report = finetune(store, name, replace(config, seed=seed))
                ev = evaluate(store, target, run_id=report.run_id, accuracy=accuracy,
                              max_new_tokens=max_new_tokens)
            for w in caught:
                if "contaminated" not in str(w.message):
                    warnings.warn(w.message, w.category, stacklevel=2)
            runs.append({"seed": seed, "run_id": report.run_id, "eval_id": ev.eval_id,
                         "nll": ev.nll, "accuracy": ev.accuracy, "overlap": ev.overlap,
                         "train_seconds": getattr(report, "seconds", None),
                         "wall_seconds": round(time.time() - t0, 3)})
        arms.append(_summarize(name, manifests[name], runs))
    _add_deltas(arms, baseline)
    board = {
        "target": target, "target_examples": len(tgt.ids), "target_fingerprint": tgt.fingerprint,
        "baseline": baseline, "seeds": seed_list, "config": asdict(config),
        "base": {"model": config.model, "nll": base.nll, "accuracy": base.accuracy,
                 "eval_id": base.eval_id},
        "arms": sorted(arms, key=lambda a: a["nll_mean"]), "notes": notes,
        "seconds": round(time.time() - started, 3)}
    for arm in board["arms"]:
        if arm["overlap"]:
            board["notes"].append(f"{arm['selection']}: {arm['overlap']} target examples are in "
                                  "the training selection (contamination)")
    key = fingerprint([tgt.fingerprint, selections, seed_list, asdict(config), accuracy], 12)
    folder = store.folder("compare") / key
    folder.mkdir(parents=True, exist_ok=True)
    board["path"] = str(folder)
    write_atomic(folder / "leaderboard.json", json.dumps(board, indent=2, default=str).encode())
    plot(board, folder / "leaderboard.png")
    return board


def _budget_notes(manifests: dict, selections: list[str]) -> list[str]:
    tokens = {s: manifests[s].get("tokens") for s in selections}
    known = {s: t for s, t in tokens.items() if t}
    if len(known) == len(selections) and max(known.values()) > 1.1 * min(known.values()):
        detail = ", ".join(f"{s} {t:,}" for s, t in known.items())
        return [f"the selections differ by more than 10% in tokens ({detail}): the comparison "
                "is not at an equal token budget"]
    return []


def _summarize(name: str, manifest: dict, runs: list[dict]) -> dict:
    nll = np.array([r["nll"] for r in runs], float)
    acc = [r["accuracy"] for r in runs if r["accuracy"] is not None]
    return {"selection": name, "method": manifest["method"], "size": manifest["size"],
            "tokens": manifest.get("tokens"), "runs": runs,
            "nll_mean": float(nll.mean()), "nll_std": float(nll.std(ddof=1)) if len(nll) > 1
            else 0.0,
            "accuracy_mean": float(np.mean(acc)) if acc else None,
            "accuracy_std": float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
            "overlap": max(r["overlap"] for r in runs),
            "wall_seconds_per_run": float(np.mean([r["wall_seconds"] for r in runs]))}


def _add_deltas(arms: list[dict], baseline: str | None) -> None:
    """NLL delta against the baseline arm (negative = better) and Welch's t-test p."""
    base = next((a for a in arms if a["selection"] == baseline), None)
    for arm in arms:
        arm["delta_vs_baseline"] = arm["p_value"] = None
        if base is None or arm is base:
            continue
        arm["delta_vs_baseline"] = arm["nll_mean"] - base["nll_mean"]
        a = [r["nll"] for r in arm["runs"]]
        b = [r["nll"] for r in base["runs"]]
        if len(a) > 1 and len(b) > 1:
            from scipy.stats import ttest_ind

            p = ttest_ind(a, b, equal_var=False).pvalue
            arm["p_value"] = None if np.isnan(p) else float(p)


def plot(board: dict, path: Path) -> Path:
    """Horizontal bars of target NLL (mean +- std over seeds) per arm, base model dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = board["arms"]
    names = [a["selection"] for a in arms][::-1]
    means = [a["nll_mean"] for a in arms][::-1]
    stds = [a["nll_std"] for a in arms][::-1]
    colors = ["#d62728" if n == board["baseline"] else "#1f77b4" for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.6))
    ax.barh(names, means, xerr=stds, color=colors, capsize=3)
    ax.axvline(board["base"]["nll"], color="gray", linestyle="--", label="base model")
    low = min(min(m - s for m, s in zip(means, stds)), board["base"]["nll"])
    high = max(max(m + s for m, s in zip(means, stds)), board["base"]["nll"])
    ax.set_xlim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
    ax.set_xlabel(f"target NLL per token (lower is better), {len(board['seeds'])} seed(s)")
    ax.set_title(f"target: {Path(board['target']).name}", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    publish(tmp, path)
    return path


def format_board(board: dict) -> list[dict]:
    """Leaderboard rows for printing."""
    rows = [{"arm": "base model", "nll": f"{board['base']['nll']:.4f}", "accuracy":
             "" if board["base"]["accuracy"] is None else f"{board['base']['accuracy']:.3f}",
             "delta": "", "p": "", "examples": "", "tokens": "", "s/run": ""}]
    for a in board["arms"]:
        rows.append({
            "arm": a["selection"] + (" (baseline)" if a["selection"] == board["baseline"] else ""),
            "nll": f"{a['nll_mean']:.4f} ± {a['nll_std']:.4f}",
            "accuracy": "" if a["accuracy_mean"] is None else
            f"{a['accuracy_mean']:.3f} ± {a['accuracy_std'] or 0:.3f}",
            "delta": "" if a["delta_vs_baseline"] is None else f"{a['delta_vs_baseline']:+.4f}",
            "p": "" if a["p_value"] is None else f"{a['p_value']:.3g}",
            "examples": a["size"], "tokens": a["tokens"] or "",
            "s/run": f"{a['wall_seconds_per_run']:.1f}"})
    return rows
