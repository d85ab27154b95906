"""Gradient influence (LESS / TracIn): how much a step on an example would move the model
toward a target set.

1. Warm-up: LoRA fine-tune on a small random slice of the store (`--warmup N` rows, saved
   as selection `influence-warmup-N-sS`), keeping K evenly spaced snapshots (weights,
   Adam moments, the step's learning rate); or any finished LoRA run that kept snapshots
   (`--warmup-run ID`, trained with `TrainConfig(keep_checkpoints=K)`). The scorer does
   not train: it asks for its warm-up (`warmup_plan`), and the fine-tune stage trains it
   (`curate.finetune.prepare_scorer`, called by `curate score`, the API and the flows).
2. Features, per snapshot: each example's gradient of its mean token loss (assistant
   tokens, tokenized exactly as the fine-tune stage does) with respect to the LoRA
   weights. Pool examples are Adam-preconditioned as in LESS (Xia et al. 2024): the update
   Adam would make from the snapshot's moments, (b1 m + (1-b1) g) / sqrt(b2 v + (1-b2) g^2
   + eps); target examples keep the plain gradient. Then a random projection to `dim`
   (default 8192), scaled to unit length (only cosines are used) and stored as float16.
3. Scores: influence = sum_c lr_c cos(f_c(x), g_c(t)) / sum_c lr_c, averaged over the
   target examples (`influence`) or their maximum (`influence_max`): TracIn's learning-
   rate-weighted sum over checkpoints, divided by the weights' total so it stays a cosine
   in [-1, 1] (ranking unchanged). `grad_norm`: the lr-weighted mean of the raw
   (unprojected, unpreconditioned) gradient norm.

Per-example gradients take one forward and one backward pass per batch: every LoRA matrix
is an nn.Linear, so hooks keep its input X (B, T, in) and output gradient G (B, T, out),
and example b's weight gradient is G_b^T X_b (an einsum): no backward per example.

Projection: a blockwise subsampled randomized Hadamard transform (SRHT). The gradient
(d ~ 2.4M for SmolLM2-135M at r=8) is zero-padded to whole blocks of 2^20 (or the next
power of two when smaller), multiplied by random signs, Hadamard-transformed per block
(Kronecker factors of 32 x 32, O(d log d), never a d x dim matrix in memory), and `dim`
coordinates sampled without replacement, scaled so that E<Px, Py> = <x, y>. Signs and
samples come from `seed`.

    <store>/gradients/<config>/config.json      warm-up run, snapshot step and lr, dim,
                                                seed, precondition, max_tokens, parameters
                              /part-*.parquet    id, grad_norm (float32),
                                                features (fixed_size_list<float16>[dim])

One gradient folder per (warm-up run, snapshot, projection, precondition, max_tokens):
any target, and any rerun, reads the features instead of recomputing them. Parts appear
atomically (temp + rename); two processes computing the same examples at once both write
a part, and the first one wins on read.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.scoring.base import Scorer
from curate.store import Store, fsync, write_atomic

GRADIENT_VERSION = "1"
BLOCK = 1 << 20  # Hadamard block of the projection
FACTOR_BITS = 5  # the Hadamard transform as Kronecker factors of 2^5 x 2^5 matmuls
PROJECT_ROWS = 8  # gradients preconditioned and projected at a time


# ---------------------------------------------------------------- per-example gradients
def trainable_linears(model) -> list[tuple[str, object]]:
    """(name, module) of every nn.Linear with trainable weights, in parameter order;
    fails when another trainable parameter exists (its per-example gradient would be
    missing)."""
    import torch

    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and m.weight.requires_grad]
    covered = {id(p) for _, m in layers for p in m.parameters() if p.requires_grad}
    other = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
    if other:
        raise CurateError(f"trainable parameter {other[0]} is not the weight of a linear "
                          "layer, so per-example gradients cannot be formed from layer hooks\n"
                          "  fix: use a plain LoRA warm-up run (no DoRA, no trained norms)")
    if not layers:
        raise CurateError("the model has no trainable linear layer\n  fix: use a LoRA run")
    return layers


def gradient_size(model) -> int:
    return sum(p.numel() for _, m in trainable_linears(model) for p in m.parameters()
               if p.requires_grad)


def per_example_gradients(model, examples: list, device: str = "cpu"):
    """(gradients (B, d) float32, token losses per example): the gradient of each
    example's mean token loss over its trained tokens, flattened in `trainable_linears`
    order, from ONE forward and ONE backward pass over the right-padded batch."""
    (grads, losses), = _gradient_passes(model, examples, device,
                                        lambda rows, counts: [1 / counts[rows]])
    return grads, losses


def per_step_gradients(model, examples: list, runs: list[dict], device: str = "cpu"):
    """Yields (step s, gradients (B, d) float32) for every step index s some example
    has: row b is the gradient of example b's mean token loss over the tokens of its step
    s (`runs[b][s]`, indices among its trained tokens; zero when it has no step s). One
    forward pass, then one backward pass per step index: a step's loss reaches back into
    the earlier steps' activations, so per-step gradients are not slices of one
    backward."""
    import torch

    steps = sorted(set().union(*runs))  # step indices some example has

    def weightings(rows, counts):
        offsets = np.concatenate([[0], np.cumsum(counts.cpu().numpy())[:-1]])
        for s in steps:
            w = torch.zeros(len(rows), dtype=torch.float32)
            for b, r in enumerate(runs):
                if s in r:
                    w[offsets[b] + r[s]] = 1 / len(r[s])
            yield w.to(rows.device)

    # the passes first: zip then runs them to their end (and their hooks' removal)
    for (grads, _), s in zip(_gradient_passes(model, examples, device, weightings), steps):
        yield s, grads


def _gradient_passes(model, examples: list, device: str, weightings):
    """The engine of the two above. One forward pass over the right-padded batch with
    hooks on every trainable linear layer (its input X (B, T, in) and, on each backward,
    its output gradient G (B, T, out)); then per token weighting w from
    `weightings(rows, counts)` (rows: the example of each trained token, in batch order;
    counts: trained tokens per example), one backward pass of sum(w * token loss), and
    example b's weight gradient G_b^T X_b (an einsum). Yields ((B, d) gradients, token
    loss per example as numpy) per weighting."""
    import torch
    import torch.nn.functional as F

    from curate.tokens import IGNORE

    layers = trainable_linears(model)
    inputs: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output):
            inputs[name] = args[0].detach()
            output.register_hook(lambda g: grads.__setitem__(name, g.detach()))
        return hook

    n, width = len(examples), max(len(e.input_ids) for e in examples)
    ids = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.from_numpy(e.input_ids)
        labels[row, : len(e.labels)] = torch.from_numpy(e.labels)
    ids, labels = ids.to(device), labels.to(device)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    handles = [m.register_forward_hook(keep(name)) for name, m in layers]
    size = sum(p.numel() for _, m in layers for p in m.parameters() if p.requires_grad)
    try:
        targets = labels[:, 1:]
        trained = targets != IGNORE  # position t-1 predicts token t
        # right padding under a causal mask: no real token sees a pad, so no attention
        # mask is needed and pads get no gradient
        hidden = lm.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        logits = lm.get_output_embeddings()(hidden[:, :-1][trained])
        token_loss = F.cross_entropy(logits.float(), targets[trained], reduction="none")
        rows = trained.nonzero()[:, 0]
        counts = trained.sum(1)
        per_example = (torch.zeros(n, device=token_loss.device).index_add_(
            0, rows, token_loss.detach()) / counts).cpu().numpy()
        weights = list(weightings(rows, counts))
        for k, w in enumerate(weights):
            model.zero_grad(set_to_none=True)
            (token_loss * w).sum().backward(retain_graph=k < len(weights) - 1)
            out = torch.empty((n, size), dtype=torch.float32, device=ids.device)
            offset = 0
            for name, m in layers:
                x = inputs[name].reshape(n, -1, m.in_features).float()
                g = grads[name].reshape(n, -1, m.out_features).float()
                out[:, offset:offset + m.weight.numel()] = torch.einsum(
                    "bto,bti->boi", g, x).reshape(n, -1)
                offset += m.weight.numel()
                if m.bias is not None and m.bias.requires_grad:
                    out[:, offset:offset + m.out_features] = g.sum(1)
                    offset += m.out_features
            yield out, per_example
    finally:
        for h in handles:
            h.remove()
        inputs.clear()
        grads.clear()
        model.zero_grad(set_to_none=True)


def _length_batches(examples: list, batch_tokens: int, batch_size: int):
    """Examples sorted by length, cut into batches of at most `batch_size` rows and
    `batch_tokens` padded tokens (a longer example goes alone)."""
    examples = sorted(examples, key=lambda e: (len(e.input_ids), e.index))
    k = 0
    while k < len(examples):
        j = k + 1
        while (j < len(examples) and j - k < batch_size
               and (j - k + 1) * len(examples[j].input_ids) <= batch_tokens):
            j += 1
        yield examples[k:j]
        k = j


def _features_of(grads, projector: "Projector", adam: "Snapshot | None"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Gradient rows (B, d) -> (features (B, dim) float16 of unit length, raw norms):
    Adam-preconditioned with the moments of `adam` when given, then projected."""
    import torch

    feats = []
    with torch.no_grad():
        for lo in range(0, len(grads), PROJECT_ROWS):  # bounds the padded copies
            rows = grads[lo:lo + PROJECT_ROWS]
            if adam is not None:
                rows = adam_direction(rows, adam.exp_avg, adam.exp_avg_sq, adam.betas, adam.eps)
            feats.append(_unit(projector(rows).cpu().numpy()).astype(np.float16))
        norms = grads.norm(dim=1).cpu().numpy()
    return (np.concatenate(feats) if feats else np.zeros((0, projector.dim), np.float16)), norms


def gradient_features(model, examples: list, projector: "Projector",
                      adam: "Snapshot | None" = None, batch_tokens: int = 4096,
                      batch_size: int = 16, device: str = "cpu"
                      ) -> tuple[list, np.ndarray, np.ndarray]:
    """(the examples in the order computed, their projected features scaled to unit
    length (float16), their raw gradient norms): examples sorted by length and batched
    under `batch_tokens` padded tokens and `batch_size` rows; Adam-preconditioned with
    the moments of `adam` when given."""
    done, feats, norms = [], [np.zeros((0, projector.dim), np.float16)], [np.zeros(0, np.float32)]
    for batch in _length_batches(examples, batch_tokens, batch_size):
        f, g = _features_of(per_example_gradients(model, batch, device)[0], projector, adam)
        done += batch
        feats.append(f)
        norms.append(g)
    return done, np.concatenate(feats), np.concatenate(norms)


def step_gradient_features(model, examples: list, runs: dict, projector: "Projector",
                           adam: "Snapshot | None" = None, batch_tokens: int = 4096,
                           batch_size: int = 16, device: str = "cpu"
                           ) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """As `gradient_features`, per step: ((example index, step) pairs in the order
    computed, features, norms), from `per_step_gradients`; `runs[example.index]` maps a
    step to its trained-token indices (`curate.scoring.steps.step_runs`)."""
    done, feats, norms = [], [np.zeros((0, projector.dim), np.float16)], [np.zeros(0, np.float32)]
    for batch in _length_batches(examples, batch_tokens, batch_size):
        batch_runs = [runs[e.index] for e in batch]
        for s, grads in per_step_gradients(model, batch, batch_runs, device):
            rows = [b for b, r in enumerate(batch_runs) if s in r]
            f, g = _features_of(grads[rows], projector, adam)
            done += [(batch[b].index, s) for b in rows]
            feats.append(f)
            norms.append(g)
    return done, np.concatenate(feats), np.concatenate(norms)


def adam_direction(grads, exp_avg, exp_avg_sq, betas: tuple[float, float], eps: float):
    """LESS's Adam-preconditioned gradient: the update direction Adam would take from
    these moments after one more step on `grads` (rows)."""
    b1, b2 = betas
    return (b1 * exp_avg + (1 - b1) * grads) / ((b2 * exp_avg_sq + (1 - b2) * grads ** 2
                                                 + eps).sqrt())


# ---------------------------------------------------------------- projection
class Projector:
    """Blockwise subsampled randomized Hadamard transform from d to `dim` dimensions
    (see the module docstring); inner products are preserved in expectation."""

    def __init__(self, d: int, dim: int, seed: int = 0, device: str = "cpu",
                 block: int = BLOCK):
        import torch

        self.d, self.dim = d, dim
        self.block = min(block, 1 << max(0, (d - 1).bit_length()))
        self.blocks = math.ceil(d / self.block)
        self.n = self.blocks * self.block
        if not 0 < dim <= d:
            raise CurateError(f"projection dimension {dim} is not in 1..{d} (the gradient "
                              f"has {d} parameters)\n  fix: use a smaller --dim")
        gen = torch.Generator().manual_seed(seed)
        self.signs = (torch.randint(0, 2, (self.n,), generator=gen) * 2 - 1).float().to(device)
        self.sample = torch.randperm(self.n, generator=gen)[:dim].sort().values.to(device)
        self.scale = math.sqrt(self.blocks / dim)  # E|Px|^2 = |x|^2 (unnormalized H)

    def __call__(self, x):
        """Rows of x (B, d) -> (B, dim) float32."""
        import torch.nn.functional as F

        rows = x.shape[0]
        y = F.pad(x.float(), (0, self.n - self.d)) * self.signs
        y = hadamard(y.reshape(rows * self.blocks, self.block)).reshape(rows, self.n)
        return y[:, self.sample] * self.scale


def hadamard(x):
    """x @ H_m for every row of x (R, m), m a power of two, H unnormalized (+-1): the
    Kronecker factors of 2^FACTOR_BITS are applied by matmuls on the last axis, which is
    then rotated to the front, so after every factor the layout is the original one."""
    import torch

    rows, m = x.shape
    bits = m.bit_length() - 1
    if 1 << bits != m:
        raise ValueError(f"hadamard needs a power of two, not {m}")
    while bits:
        step = min(FACTOR_BITS, bits)
        f = 1 << step
        h = torch.ones((1, 1), dtype=x.dtype, device=x.device)
        for _ in range(step):
            h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
        x = (x.reshape(rows, m // f, f) @ h).transpose(1, 2).reshape(rows, m)
        bits -= step
    return x


# ---------------------------------------------------------------- gradient store
class GradientStore:
    """Projected gradient features of one (warm-up run, snapshot, projection,
    precondition, max_tokens) configuration, by example id."""

    def __init__(self, store: Store, config: dict):
        self.config = {"version": GRADIENT_VERSION, **config}
        key = fingerprint(self.config, 16, "md5")
        self.folder = store.folder("gradients") / key
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "config.json").is_file():
            write_atomic(self.folder / "config.json",
                         json.dumps(self.config, indent=2).encode())
        self._index: dict[str, Path] = {}
        self._seen: set[Path] = set()

    def _refresh(self) -> None:
        for part in sorted(self.folder.glob("part-*.parquet")):
            if part not in self._seen:
                self._seen.add(part)
                for i in pq.read_table(part, columns=["id"])["id"].to_pylist():
                    self._index.setdefault(i, part)

    def missing(self, ids: list[str]) -> list[str]:
        self._refresh()
        return [i for i in ids if i not in self._index]

    def read(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask over ids, features (found, dim) float16, grad_norm (found,))."""
        self._refresh()
        found = np.array([i in self._index for i in ids], bool)
        feats = np.zeros((int(found.sum()), self.config["dim"]), np.float16)
        norms = np.zeros(int(found.sum()), np.float32)
        slot = {i: k for k, i in enumerate(i for i in ids if i in self._index)}
        by_part: dict[Path, list[str]] = {}
        for i in slot:
            by_part.setdefault(self._index[i], []).append(i)
        for part, wanted in by_part.items():
            t = pq.read_table(part)
            rows = {i: r for r, i in enumerate(t["id"].to_pylist())}
            take = [rows[i] for i in wanted]
            vectors = t["features"].combine_chunks().flatten().to_numpy().reshape(
                t.num_rows, -1)
            where = [slot[i] for i in wanted]
            feats[where] = vectors[take]
            norms[where] = t["grad_norm"].to_numpy()[take]
        return found, feats, norms

    def write(self, ids: list[str], feats: np.ndarray, norms: np.ndarray) -> None:
        if not ids:
            return
        dim = feats.shape[1]
        table = pa.table({
            "id": pa.array(ids, pa.string()),
            "grad_norm": pa.array(norms.astype(np.float32)),
            "features": pa.FixedSizeListArray.from_arrays(
                pa.array(feats.astype(np.float16).ravel(), pa.float16()), dim)})
        name = f"part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        fsync(tmp)
        os.replace(tmp, self.folder / name)


# ---------------------------------------------------------------- warm-up snapshots
@dataclass
class Snapshot:
    """A kept warm-up step: LoRA weights by parameter name, and the Adam moments as flat
    tensors in `trainable_linears` order."""

    step: int
    lr: float
    weights: dict
    exp_avg: object
    exp_avg_sq: object
    betas: tuple[float, float]
    eps: float


def run_snapshots(store: Store, run_id: str, count: int) -> list[Path]:
    """Up to `count` evenly spaced kept snapshots of a finished LoRA run (all when it
    kept fewer), oldest first."""
    run_dir = store.finished_run(run_id, fix="or leave --warmup-run out to train a warm-up")
    method = json.loads((run_dir / "config.json").read_text())["config"]["method"]
    kept = sorted((run_dir / "checkpoints").glob("step-*/snapshot.json"))
    problem = "is not a LoRA run" if method != "lora" else "kept no snapshots" if not kept else ""
    if problem:
        raise CurateError(f"run {run_id!r} {problem}: influence needs the LoRA weights and "
                          "Adam state of a few of its steps\n  fix: leave --warmup-run out (a "
                          "warm-up is trained), or train one with TrainConfig(method='lora', "
                          "keep_checkpoints=4)")
    if len(kept) > count:
        picks = sorted({round(x) for x in np.linspace(len(kept) - 1, 0, count)})
        kept = [kept[p] for p in picks]
    return [p.parent for p in kept]


def load_snapshot(folder: Path, names: list[str], device: str = "cpu") -> Snapshot:
    """A kept snapshot, its moments flattened in the order of parameter `names`."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((folder / "snapshot.json").read_text())
    tensors = load_file(str(folder / "snapshot.safetensors"))
    absent = [n for n in names if f"exp_avg.{n}" not in tensors]
    if absent:
        raise CurateError(f"snapshot {folder} does not fit its run's adapter ({absent[0]} "
                          "missing)\n  fix: delete the run and train the warm-up again")
    weights = {k[len("weight."):]: v for k, v in tensors.items() if k.startswith("weight.")}

    def flat(kind: str):
        return torch.cat([tensors[f"{kind}.{n}"].reshape(-1) for n in names]).to(device)

    return Snapshot(meta["step"], meta["lr"], weights, flat("exp_avg"), flat("exp_avg_sq"),
                    tuple(meta["betas"]), meta["eps"])


# ---------------------------------------------------------------- the scorer
class InfluenceScorer(Scorer):
    """Influence of every example on a target (see the module docstring). Options:
    `target` (required: a selection, `source:NAME` or a file, as `curate evaluate`),
    `warmup` (rows of the random warm-up slice, default 256) or `warmup_run` (a finished
    LoRA run with kept snapshots), `checkpoints` (snapshots used), `dim`,
    `precondition` (adam or none), `max_tokens`."""

    name = "influence"
    version = "1"
    model_kind = "causal-lm"
    on_gpu = True
    columns = {"influence": pa.float32(), "influence_max": pa.float32(),
               "grad_norm": pa.float32()}
    higher_is_better = {"influence": True, "influence_max": True}
    needs = "messages"
    shard_rows: ClassVar[int] = 256  # gradient work is slow: commit (and show) often

    needs_store = True
    max_batch_size = 16  # rows x 2.4M floats of per-example gradients

    def __init__(self, store: Store | str | Path | None = None, target: str | None = None,
                 model: str | None = None, warmup: int | None = None,
                 warmup_run: str | None = None, checkpoints: int = 4, dim: int = 8192,
                 precondition: str = "adam", max_tokens: int = 512, lora_r: int = 8,
                 warmup_epochs: float = 1.0, seed: int = 0, batch_tokens: int = 4096,
                 batch_size: int = 16, device: str | None = None):
        from curate.targets import load_target

        if target is None:
            raise CurateError("the influence scorer needs a target: the examples to be "
                              "influential for\n  fix: pass --target (a selection, "
                              "source:NAME, or a file), e.g. --target source:gsm8k/test")
        if store is None:
            raise CurateError("the influence scorer needs the store (for its target, "
                              "warm-up run and gradient features)\n  fix: pass store=...")
        if warmup is not None and warmup_run is not None:
            raise CurateError("give either --warmup (rows to train a warm-up on) or "
                              "--warmup-run (a finished run), not both")
        problems = [
            (precondition not in ("adam", "none"), f"precondition {precondition!r}",
             "adam or none"),
            (checkpoints < 1, f"checkpoints={checkpoints}", "checkpoints >= 1"),
            (dim < 1, f"dim={dim}", "dim >= 1"),
            (warmup is not None and warmup < 1, f"warmup={warmup}", "warmup >= 1"),
        ]
        for bad, what, fix in problems:
            if bad:
                raise CurateError(f"cannot score influence with {what}\n  fix: use {fix}")
        self.store = store if isinstance(store, Store) else Store(store)
        self.store.require()
        tgt = load_target(self.store, target)
        if warmup_run is not None:
            run_snapshots(self.store, warmup_run, checkpoints)  # fails now when unusable
            model = json.loads((self.store.folder("runs") / warmup_run / "config.json"
                                ).read_text())["config"]["model"]
            spec: dict = {"run": warmup_run}
        else:
            spec = {"rows": warmup or 256, "seed": seed, "lora_r": lora_r,
                    "epochs": warmup_epochs}
        super().__init__(model=model or "smollm2-135m", batch_size=batch_size, device=device,
                         params={"target": tgt.fingerprint, "warmup": spec,
                                 "checkpoints": checkpoints, "dim": dim, "seed": seed,
                                 "precondition": precondition, "max_tokens": max_tokens})
        self.target = tgt
        self.warmup_rows = spec.get("rows")
        self.warmup_run = warmup_run
        self.checkpoints, self.dim, self.seed = checkpoints, dim, seed
        self.precondition, self.max_tokens, self.lora_r = precondition, max_tokens, lora_r
        self.warmup_epochs, self.batch_tokens = warmup_epochs, batch_tokens
        self.computed = 0  # examples whose gradients this scorer computed (not read)
        self.run_id = warmup_run  # the warm-up run, known after prepare()
        self.snapshots: list[Snapshot] = []
        self._ready = False

    # -- setup
    def warmup_plan(self) -> dict | None:
        """The warm-up this scorer still needs (None once it has a run): the random
        selection to train on and the LoRA training options. The fine-tune stage trains it
        (`curate.finetune.prepare_scorer`, which `curate score` and the flows call) and
        hands the run id back as `run_id`."""
        if self.run_id is not None:
            return None
        return {"selection": f"influence-warmup-{self.warmup_rows}-s{self.seed}",
                "rows": self.warmup_rows, "seed": self.seed,
                "train": {"model": self.model, "method": "lora", "epochs": self.warmup_epochs,
                          "max_tokens": self.max_tokens, "seed": self.seed,
                          "lora_r": self.lora_r, "lora_alpha": 2 * self.lora_r,
                          "keep_checkpoints": self.checkpoints, "device": self.device}}

    def prepare(self, progress=None) -> None:
        """Load the warm-up run's snapshots and the model, and compute (or read) the
        target's features. The warm-up run must exist (`warmup_plan`)."""
        if self._ready:
            return
        from curate.models import device as pick_device

        if self.run_id is None:
            raise CurateError("the influence scorer's warm-up run is not trained yet\n  "
                              "fix: curate.finetune.prepare_scorer(store, scorer) trains it "
                              "(curate score influence does), or pass warmup_run=RUN_ID")
        self._dev = pick_device(self.device)
        self._model, self._tok = self._load_model()
        names = [f"{n}.{p}" for n, m in trainable_linears(self._model)
                 for p, q in m.named_parameters(recurse=False) if q.requires_grad]
        self.snapshots = [load_snapshot(folder, names, self._dev) for folder in
                           run_snapshots(self.store, self.run_id, self.checkpoints)]
        self._projector = Projector(gradient_size(self._model), self.dim, self.seed, self._dev)
        self._lr_total = sum(s.lr for s in self.snapshots)
        self._target_feats = []
        for snap in self.snapshots:
            found, feats, _ = self._features(snap, self.target.ids, self.target.messages,
                                             precondition=False)
            if not found.any():
                raise CurateError(f"no example of target {self.target.name!r} has an "
                                  "assistant response to take a gradient of\n  fix: use a "
                                  "target with responses")
            self._target_feats.append(_unit(feats))
        self._ready = True

    def _load_model(self):
        from curate.models import load_run_model

        return load_run_model(self.store, self.run_id, self._dev, trainable=True)

    # -- features
    def _features(self, snap: Snapshot, ids: list[str], messages: list, precondition: bool,
                  steps: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, features, grad_norm) of these examples at this snapshot (of their
        steps, keyed `id#s`, with `steps`): read from the gradient store, the missing ones
        computed and stored first."""
        grads = GradientStore(self.store, {
            "run": self.run_id, "step": snap.step, "lr": snap.lr, "dim": self.dim,
            "seed": self.seed, "projection": f"srht-block{self._projector.block}",
            "precondition": "adam" if precondition else "none", "max_tokens": self.max_tokens,
            "parameters": self._projector.d, "model": self.model,
            **({"unit": "step"} if steps else {})})
        keys, owner = _step_keys(ids, messages) if steps else (ids, list(range(len(ids))))
        missing = set(grads.missing(keys))
        todo = sorted({owner[k] for k, key in enumerate(keys) if key in missing})
        if todo:
            grads.write(*self._compute(snap, [ids[k] for k in todo],
                                       [messages[k] for k in todo], precondition, steps))
        return grads.read(keys)

    def _compute(self, snap: Snapshot, ids: list[str], messages: list, precondition: bool,
                 steps: bool = False) -> tuple[list[str], np.ndarray, np.ndarray]:
        from curate.tokens import encode
        from curate.scoring.steps import step_runs

        unexpected = self._model.load_state_dict(snap.weights, strict=False).unexpected_keys
        if unexpected:
            raise CurateError(f"snapshot step {snap.step} of run {self.run_id!r} does not fit "
                              f"its adapter ({unexpected[0]})\n  fix: train the warm-up again")
        limit = min(self.max_tokens, getattr(self._model.config, "max_position_embeddings",
                                             None) or self.max_tokens)
        examples = encode(self._tok, messages, limit)
        adam = snap if precondition else None
        self.computed += len(examples)
        if not steps:
            examples, feats, norms = gradient_features(
                self._model, examples, self._projector, adam, self.batch_tokens,
                self.batch_size, self._dev)
            return [ids[e.index] for e in examples], feats, norms
        runs = {e.index: step_runs(messages[e.index], e, ids[e.index]) for e in examples}
        pairs, feats, norms = step_gradient_features(
            self._model, examples, runs, self._projector, adam, self.batch_tokens,
            self.batch_size, self._dev)
        # steps without tokens (empty, or cut by max_tokens) are stored as null (NaN norm),
        # so that they are not computed again
        keys, _ = _step_keys(ids, messages)
        done = {f"{ids[i]}#{s}" for i, s in pairs}
        empty = [k for k in keys if k not in done]
        return ([f"{ids[i]}#{s}" for i, s in pairs] + empty,
                np.concatenate([feats, np.zeros((len(empty), self.dim), np.float16)]),
                np.concatenate([norms, np.full(len(empty), np.nan, np.float32)]))

    # -- scores
    def _similarities(self, ids: list[str], messages: list, steps: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per example (or step): (found, lr-weighted mean cosine to the target examples,
        the same with their max, lr-weighted raw gradient norm)."""
        self.prepare()  # a no-op but in a fresh engine worker
        n = len(_step_keys(ids, messages)[0]) if steps else len(ids)
        mean, best, norm = np.zeros(n), np.zeros(n), np.zeros(n)
        found = np.ones(n, bool)
        for snap, target in zip(self.snapshots, self._target_feats):
            have, feats, norms = self._features(snap, ids, messages,
                                                self.precondition == "adam", steps)
            rows = np.flatnonzero(have)
            ok = ~np.isnan(norms)
            have[rows[~ok]] = False
            found &= have
            rows, feats, norms = rows[ok], feats[ok], norms[ok]
            w = snap.lr / self._lr_total
            sims = _unit(feats) @ target.T  # (rows, target examples) cosines
            mean[rows] += w * sims.mean(1)
            best[rows] += w * sims.max(1)
            norm[rows] += w * norms
        return found, mean, best, norm

    def __getstate__(self) -> dict:
        """A copy sent to an engine worker carries the warm-up run, not what prepare()
        loaded: the worker prepares itself on its first shard (reading the target's
        features from the store's gradient cache)."""
        state = {k: v for k, v in self.__dict__.items()
                 if k not in ("_model", "_tok", "_projector", "_target_feats")}
        return state | {"warmup_run": self.run_id, "snapshots": [], "_ready": False}

    def score(self, batch: pa.Table) -> pa.Table:
        found, mean, best, norm = self._similarities(batch["id"].to_pylist(),
                                                     batch["messages"].to_pylist())
        reasons = [None if ok else "no assistant tokens to take a gradient of" for ok in found]

        def col(values: np.ndarray) -> pa.Array:
            return pa.array([float(v) if ok else None for v, ok in zip(values, found)],
                            pa.float32())

        return pa.table({"influence": col(mean), "influence_max": col(best),
                         "grad_norm": col(norm), "reason": pa.array(reasons, pa.string())})


class StepInfluenceScorer(InfluenceScorer):
    """Influence of every step (assistant turn) of an example on a target: the gradient
    of the step's own mean token loss, featurized and compared with the target exactly
    as `influence` does whole examples (same warm-up, snapshots, projection and target
    features; step features are stored in their own gradient folder). For agent traces,
    a step whose update points away from the target (low or negative influence) is a
    harmful step: `curate select expert-failures -p step_score=step_influence.
    step_influence -p harmful=low`. Costs one backward pass per step index and batch.

    Columns: `step_influence` (one entry per assistant message in order, null for empty
    turns and turns cut by `max_tokens`), `min_step_influence`."""

    name = "step_influence"
    version = "1"
    columns = {"step_influence": pa.list_(pa.float32()), "min_step_influence": pa.float32()}
    higher_is_better = {"min_step_influence": True}

    def score(self, batch: pa.Table) -> pa.Table:
        ids, messages = batch["id"].to_pylist(), batch["messages"].to_pylist()
        found, mean, _, _ = self._similarities(ids, messages, steps=True)
        keys, owner = _step_keys(ids, messages)
        per = [[] for _ in ids]
        for k, i in enumerate(owner):
            per[i].append(float(mean[k]) if found[k] else None)
        lowest = [min((v for v in p if v is not None), default=None) for p in per]
        reasons = [None if low is not None else "no assistant tokens to take a gradient of"
                   for low in lowest]
        return pa.table({
            "step_influence": pa.array([p if low is not None else None
                                        for p, low in zip(per, lowest)],
                                       self.columns["step_influence"]),
            "min_step_influence": pa.array(lowest, pa.float32()),
            "reason": pa.array(reasons, pa.string())})


def _step_keys(ids: list[str], messages: list) -> tuple[list[str], list[int]]:
    """Gradient-store keys of the steps of these examples (`id#s`, s over the assistant
    messages in order) and the example each belongs to."""
    keys, owner = [], []
    for i, (id_, msgs) in enumerate(zip(ids, messages)):
        for s in range(sum(m["role"] == "assistant" for m in msgs)):
            keys.append(f"{id_}#{s}")
            owner.append(i)
    return keys, owner


def _unit(feats: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    x = feats.astype(np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
