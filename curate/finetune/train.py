"""Thin SFT stage: fine-tune a causal LM (LoRA or full) on a saved selection, resumably.

    <store>/runs/<run_id>/
      config.json      TrainConfig, selection, its fingerprint and member digest, counts
      loss.parquet     step, loss, lr, tokens, seconds (rewritten at every checkpoint)
      checkpoint/      state.pt: trainable weights, optimizer, scheduler, step, RNG states,
                       batch position; swapped in whole, removed once the run is done
      checkpoints/step-NNNNNN/   with keep_checkpoints=K: K evenly spaced snapshots kept
                       for gradient influence (snapshot.safetensors: trainable weights and
                       Adam moments; snapshot.json: step, its learning rate, Adam settings)
      adapter/         LoRA: the peft adapter (save_pretrained) and the tokenizer
      model/           full fine-tune: the model and the tokenizer
      run.parquet      one row (RUN_SCHEMA); written last, so it means "finished"
      .lock            held while training: one process per run

The default run id is derived from the selection, its members and the configuration, so
running the same command again resumes (or returns the finished run) instead of starting
over. The loop is plain torch: length-grouped padded batches, loss = summed token
cross-entropy / trained tokens of the optimizer step (so masked tokens and gradient
accumulation weigh every token equally), AdamW, linear warmup then linear decay,
float32 on CPU and bf16 autocast on CUDA. A resumed run restores weights, optimizer,
scheduler, RNG states and its place in the batch order, and ends with the same weights
and loss curve as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.fingerprint import fingerprint
from curate.models import quiet_peft
from curate.tokens import IGNORE, Example, batches, encode
from curate.schema import RUN_SCHEMA  # one row per finished run: the `runs` view
from curate.store import fsync, hold_lock, publish, write_atomic

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# fields that do not change what is trained: left out of the run's identity
_RUNTIME_FIELDS = ("device", "checkpoint_every")

LOSS_SCHEMA = pa.schema([
    ("step", pa.int64()),  # optimizer steps done, from 1
    ("loss", pa.float64()),  # mean token loss of the step
    ("lr", pa.float64()),  # learning rate the step used
    ("tokens", pa.int64()),  # trained tokens in the step
    ("seconds", pa.float64()),  # training time so far (resumed runs add up)
])



@dataclass
class TrainConfig:
    """What to train and how. `max_steps` (optimizer steps) overrides `epochs`; `lr`
    defaults to 2e-4 for LoRA and 5e-5 for a full fine-tune."""

    model: str = "smollm2-135m"
    method: str = "lora"  # or "full"
    epochs: float = 1.0
    max_steps: int | None = None
    lr: float | None = None
    batch_tokens: int = 4096  # padded tokens per micro-batch
    grad_accum: int = 1
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0  # on matrices only, not on norms and biases
    max_grad_norm: float | None = 1.0
    max_tokens: int = 1024
    seed: int = 0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    checkpoint_every: int = 50  # optimizer steps
    keep_checkpoints: int = 0  # evenly spaced snapshots kept after the run (influence)
    device: str | None = None

    def resolved(self) -> "TrainConfig":
        """A copy with the default learning rate filled in."""
        lr = self.lr if self.lr is not None else (2e-4 if self.method == "lora" else 5e-5)
        return TrainConfig(**{**asdict(self), "lr": lr})


@dataclass
class RunReport:
    run_id: str
    path: Path
    selection: str
    model: str
    method: str
    steps: int
    epochs: float
    examples: int
    skipped: int
    tokens: int  # trained tokens per epoch
    final_loss: float
    seconds: float
    losses: list[float] = field(default_factory=list)  # one per optimizer step
    cached: bool = False  # the run had finished before: nothing was trained
    resumed_from: int = 0  # the checkpoint step this call started from


def finetune(store, selection: str, config: TrainConfig, run_id: str | None = None,
             token_masks: dict[str, np.ndarray] | None = None, progress=None,
             on_step: Callable[[dict], None] | None = None) -> RunReport:
    """Fine-tune `config.model` on selection `selection` and save the run in the store.

    The selection's saved masks (`selection_masks`: turn and token masks) are applied;
    `token_masks` maps example ids to 0/1 masks over their last assistant turn's trained
    tokens (contract: `curate.tokens`) and replaces a saved token mask of that id.
    Both kinds of mask enter the run id. `progress` gets `start(total_steps)` and
    `advance(n)`; `on_step` gets each step's loss row after any checkpoint is written.
    """
    from curate.models import resolve

    from curate.safety import check_name

    config = config.resolved()
    _check(config)
    store.require()
    check_name(selection, "selection name")
    if run_id is not None:
        check_name(run_id, "run id", "my-run", max_length=150)
    ids, messages, manifest, saved_tokens, saved_turns = _selection(store, selection)
    path = resolve(config.model, "causal-lm")
    members = fingerprint("\n".join(ids))
    by_id = {**saved_tokens, **(token_masks or {})}
    masks = {i: np.asarray(by_id[x]) for i, x in enumerate(ids) if x in by_id}
    turns = {i: np.asarray(saved_turns[x], bool) for i, x in enumerate(ids) if x in saved_turns}
    identity = {"selection": selection, "members": members, "token_masks": _digest(masks),
                **{k: v for k, v in asdict(config).items() if k not in _RUNTIME_FIELDS}}
    if turns:  # only then: runs of unmasked selections keep their ids
        identity["turn_masks"] = _digest(turns)
    if not config.keep_checkpoints:  # only then: runs without snapshots keep their ids
        identity.pop("keep_checkpoints")
    key = fingerprint(identity)
    run_id = run_id or f"{selection}-{config.method}-s{config.seed}-{key[:8]}"
    check_name(run_id, "run id", "my-run", max_length=150)
    run_dir = store.folder("runs") / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    with hold_lock(run_dir / ".lock", None, f"run {run_id} is being trained by another process"):
        _recover(run_dir)
        saved = _read_json(run_dir / "config.json")
        if saved is not None and saved["key"] != key:
            raise CurateError(
                f"run {run_id!r} exists with another configuration, selection content or "
                f"token masks ({run_dir})\n  fix: leave the run id out (one is derived from "
                "the configuration), choose another one, or delete that folder")
        if saved is not None and (run_dir / "run.parquet").is_file():
            return _report(run_dir, cached=True)
        run = _Run(store, run_dir, run_id, selection, config, path, key, manifest, saved)
        return run.train(messages, masks, progress, on_step, turns)


def batch_loss(model, examples: list[Example], device: str = "cpu"):
    """(summed cross-entropy over the trained tokens of a right-padded batch, their
    count). The output head runs on trained positions only, not on every position."""
    import torch
    import torch.nn.functional as F

    width = max(len(e.input_ids) for e in examples)
    ids = torch.zeros((len(examples), width), dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.from_numpy(e.input_ids)
        attention[row, : len(e.input_ids)] = 1
        labels[row, : len(e.labels)] = torch.from_numpy(e.labels)
    ids, attention, labels = ids.to(device), attention.to(device), labels.to(device)
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    targets = labels[:, 1:]
    keep = targets != IGNORE  # position t-1 predicts token t
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        hidden = lm.get_decoder()(input_ids=ids, attention_mask=attention,
                                  use_cache=False).last_hidden_state
        logits = lm.get_output_embeddings()(hidden[:, :-1][keep])
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


class _Run:
    """One training run: model, data, optimizer and schedule, and its files."""

    def __init__(self, store, run_dir: Path, run_id: str, selection: str, config: TrainConfig,
                 path: Path, key: str, manifest: dict, saved: dict | None):
        self.store, self.dir, self.run_id, self.selection = store, run_dir, run_id, selection
        self.config, self.path, self.key, self.manifest = config, path, key, manifest
        self.created_at = saved["created_at"] if saved else _now().isoformat()
        self.examples: list[Example] = []
        self.n_batches = self.total_micro = 0
        self._orders: dict[int, list[list[int]]] = {}  # epoch -> its batch order

    def train(self, messages: list, masks: dict[int, np.ndarray], progress,
              on_step: Callable[[dict], None] | None,
              turns: dict[int, np.ndarray] | None = None) -> RunReport:
        import torch

        from curate import __version__
        from curate.models import device

        config = self.config
        dev = device(config.device)
        tokenizer, model = self._load(dev)
        max_tokens = min(config.max_tokens,
                         getattr(model.config, "max_position_embeddings", None) or 10**9)
        examples = encode(tokenizer, messages, max_tokens, masks, turns)
        if not examples:
            raise CurateError(f"no member of selection {self.selection!r} has an assistant "
                              "token to train on\n  fix: select examples with responses")
        self.examples = examples
        n_batches = self.n_batches = len(batches(examples, config.batch_tokens, config.seed))
        self.total_micro = (config.max_steps * config.grad_accum if config.max_steps
                            else max(1, math.ceil(config.epochs * n_batches)))
        total_steps = math.ceil(self.total_micro / config.grad_accum)
        tokens = sum(e.trained_tokens for e in examples)
        write_atomic(self.dir / "config.json", json.dumps({
            "run_id": self.run_id, "key": self.key, "selection": self.selection,
            "selection_fingerprint": self.manifest.get("fingerprint"),
            "selection_size": len(messages), "examples": len(examples),
            "skipped": len(messages) - len(examples), "tokens": tokens,
            "truncated": sum(e.truncated for e in examples), "batches_per_epoch": n_batches,
            "token_masked": len(masks), "turn_masked": len(turns or {}),
            "steps": total_steps, "model_path": str(self.path), "config": asdict(config),
            "created_at": self.created_at, "curate_version": __version__,
        }, indent=2).encode())

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW([
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}], lr=config.lr)
        warmup = int(config.warmup_ratio * total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(_lr_factor, warmup=warmup, total=total_steps))

        start, rows, elapsed = 0, [], 0.0
        state = self._load_checkpoint()
        if state is not None:
            unexpected = model.load_state_dict(state["weights"], strict=False).unexpected_keys
            if unexpected:
                raise CurateError(
                    f"checkpoint of run {self.run_id!r} does not fit its model ({unexpected[0]}, "
                    f"...)\n  fix: delete {self.dir / 'checkpoint'} to start the run over")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng(state["rng"])
            start, rows, elapsed = state["step"], state["losses"], state["seconds"]
        if progress is not None:
            progress.start(total_steps)
            if start:
                progress.advance(start)

        model.train()
        began = time.monotonic()
        for step in range(start, total_steps):
            groups = [self._micro_batch(m) for m in range(
                step * config.grad_accum, min((step + 1) * config.grad_accum, self.total_micro))]
            step_tokens = sum(examples[i].trained_tokens for g in groups for i in g)
            step_loss = 0.0
            for group in groups:
                loss, _ = batch_loss(model, [examples[i] for i in group], dev)
                (loss / step_tokens).backward()
                step_loss += loss.item()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            row = {"step": step + 1, "loss": step_loss / step_tokens, "lr": lr,
                   "tokens": step_tokens, "seconds": elapsed + time.monotonic() - began}
            rows.append(row)
            if step + 1 in _kept_steps(config.keep_checkpoints, total_steps):
                self._keep_snapshot(model, optimizer, step + 1, lr)
            if (step + 1) % config.checkpoint_every == 0 and step + 1 < total_steps:
                self._save_checkpoint(model, optimizer, scheduler, step + 1, rows, dev)
            if progress is not None:
                progress.advance(1)
            if on_step is not None:
                on_step(row)

        self._finish(model, tokenizer, rows, tokens)
        return _report(self.dir, resumed_from=start)

    def _load(self, dev: str):
        """A fresh trainable copy of the model (never the cached scoring one)."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        config = self.config
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.path))
            model = AutoModelForCausalLM.from_pretrained(str(self.path), dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CurateError(f"cannot load model {config.model!r} from {self.path}: {exc}\n  "
                              "fix: point --model at a Hugging Face causal-LM folder "
                              "(config.json, weights, tokenizer)") from None
        torch.manual_seed(config.seed)  # LoRA's initial A matrices
        if config.method == "lora":
            from peft import LoraConfig, get_peft_model

            present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
            targets = [t for t in LORA_TARGETS if t in present] or "all-linear"
            with quiet_peft():
                model = get_peft_model(model, LoraConfig(
                    task_type="CAUSAL_LM", r=config.lora_r, lora_alpha=config.lora_alpha,
                    lora_dropout=config.lora_dropout, target_modules=targets))
        return tokenizer, model.to(dev)

    def _micro_batch(self, m: int) -> list[int]:
        """Micro-batch `m` of the run: epoch m // B reshuffles the batch order by seed + epoch."""
        epoch, position = divmod(m, self.n_batches)
        if epoch not in self._orders:
            self._orders[epoch] = batches(self.examples, self.config.batch_tokens,
                                          self.config.seed + epoch)
        return self._orders[epoch][position]

    def _save_checkpoint(self, model, optimizer, scheduler, step: int, rows: list[dict],
                         dev: str) -> None:
        import torch

        state = {
            "step": step, "micro_batch": step * self.config.grad_accum, "losses": rows,
            "seconds": rows[-1]["seconds"],
            "weights": {n: p.detach().cpu() for n, p in model.named_parameters()
                        if p.requires_grad},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _get_rng(dev),
        }
        tmp = self.dir / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        torch.save(state, tmp / "state.pt")
        fsync(tmp / "state.pt")
        publish(tmp, self.dir / "checkpoint")
        _write_parquet(self.dir / "loss.parquet", pa.Table.from_pylist(rows, LOSS_SCHEMA))

    def _keep_snapshot(self, model, optimizer, step: int, lr: float) -> None:
        """checkpoints/step-NNNNNN/: the trainable weights after `step`, their Adam
        moments, and the learning rate the step used (what TracIn / LESS weigh by)."""
        from safetensors.torch import save_file

        tensors, group = {}, optimizer.param_groups[0]
        for name, p in model.named_parameters():
            if p.requires_grad:
                state = optimizer.state[p]
                tensors[f"weight.{name}"] = p.detach().cpu().contiguous()
                tensors[f"exp_avg.{name}"] = state["exp_avg"].cpu().contiguous()
                tensors[f"exp_avg_sq.{name}"] = state["exp_avg_sq"].cpu().contiguous()
        tmp = self.dir / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        save_file(tensors, str(tmp / "snapshot.safetensors"))
        (tmp / "snapshot.json").write_text(json.dumps({
            "step": step, "lr": lr, "betas": list(group["betas"]), "eps": group["eps"]}))
        fsync(tmp / "snapshot.safetensors")
        (self.dir / "checkpoints").mkdir(exist_ok=True)
        publish(tmp, self.dir / "checkpoints" / f"step-{step:06d}")

    def _load_checkpoint(self) -> dict | None:
        import torch

        path = self.dir / "checkpoint" / "state.pt"
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None

    def _finish(self, model, tokenizer, rows: list[dict], tokens: int) -> None:
        """Final weights, loss curve, then run.parquet (the run is done when it exists)."""
        from curate import __version__

        config = self.config
        tmp = self.dir / f".tmp-{uuid.uuid4().hex[:8]}"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        publish(tmp, self.dir / ("adapter" if config.method == "lora" else "model"))
        _write_parquet(self.dir / "loss.parquet", pa.Table.from_pylist(rows, LOSS_SCHEMA))
        row = {
            "run_id": self.run_id, "selection": self.selection, "model": config.model,
            "method": config.method, "seed": config.seed, "steps": len(rows),
            "epochs": self.total_micro / self.n_batches, "examples": len(self.examples),
            "tokens": tokens, "final_loss": rows[-1]["loss"], "seconds": rows[-1]["seconds"],
            "status": "done",
            "created_at": datetime.fromisoformat(self.created_at), "finished_at": _now(),
            "curate_version": __version__, "config": json.dumps(asdict(config), sort_keys=True),
            "path": str(self.dir),
        }
        _write_parquet(self.dir / "run.parquet", pa.Table.from_pylist([row], RUN_SCHEMA))
        shutil.rmtree(self.dir / "checkpoint", ignore_errors=True)
        self.store.rebuild_catalog()


def _check(config: TrainConfig) -> None:
    """Fail before any work on an option that cannot train."""
    problems = [
        (config.method not in ("lora", "full"), f"method {config.method!r}", "lora or full"),
        (config.max_steps is None and not config.epochs > 0, f"epochs={config.epochs}",
         "epochs > 0"),
        (config.max_steps is not None and config.max_steps < 1,
         f"max_steps={config.max_steps}", "max_steps >= 1"),
        (not config.lr > 0, f"lr={config.lr}", "lr > 0"),
        (config.batch_tokens < 1, f"batch_tokens={config.batch_tokens}", "batch_tokens >= 1"),
        (config.grad_accum < 1, f"grad_accum={config.grad_accum}", "grad_accum >= 1"),
        (not 0 <= config.warmup_ratio < 1, f"warmup_ratio={config.warmup_ratio}",
         "0 <= warmup_ratio < 1"),
        (config.checkpoint_every < 1, f"checkpoint_every={config.checkpoint_every}",
         "checkpoint_every >= 1"),
        (config.keep_checkpoints < 0, f"keep_checkpoints={config.keep_checkpoints}",
         "keep_checkpoints >= 0"),
        (config.method == "lora" and config.lora_r < 1, f"lora_r={config.lora_r}",
         "lora_r >= 1"),
    ]
    for bad, what, fix in problems:
        if bad:
            raise CurateError(f"cannot train with {what}\n  fix: use {fix}")


def _selection(store, name: str) -> tuple[list[str], list, dict, dict, dict]:
    """(ids, messages) of a saved selection in rank order, its manifest, and its saved
    masks: token masks and turn masks by id."""
    from curate.selection import load_masks

    manifest = store.saved_selection(name) / "manifest.json"
    con = store.connect()
    try:
        table = con.sql(
            "SELECT e.id, e.messages FROM examples e JOIN selection_members s USING (id) "
            "WHERE s.selection = ? ORDER BY s.rank", params=[name]).to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise CurateError(f"selection {name!r} has no examples to train on\n  fix: select "
                          "with a larger budget or a wider --where")
    tokens, turns = {}, {}
    saved = load_masks(store, name)
    for row in saved.to_pylist() if saved is not None else []:
        if row["tokens"] is not None:
            tokens[row["id"]] = np.asarray(row["tokens"], np.uint8)
        if row["turns"] is not None:
            turns[row["id"]] = row["turns"]
    return (table["id"].to_pylist(), table["messages"].to_pylist(),
            json.loads(manifest.read_text()), tokens, turns)


def _digest(masks: dict[int, np.ndarray]) -> str | None:
    if not masks:
        return None
    h = hashlib.sha1()
    for i in sorted(masks):
        h.update(f"{i}:".encode() + (masks[i] != 0).astype(np.uint8).tobytes())
    return h.hexdigest()


def _kept_steps(count: int, total: int) -> set[int]:
    """The steps whose snapshots are kept: `count` evenly spaced, the last step included."""
    return {max(1, round(total * k / count)) for k in range(1, count + 1)} if count else set()


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup to the peak over `warmup` steps, then linear decay; never 0, so the
    first and last steps both train."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(total - step, 1) / max(total - warmup, 1)


def _get_rng(dev: str) -> dict[str, Any]:
    import torch

    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss)}
    if dev.startswith("cuda"):
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _recover(run_dir: Path) -> None:
    """Undo what a crash left: staging folders, a swap stopped between its renames, and
    the checkpoint of a run that finished."""
    if (run_dir / "run.parquet").is_file():
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    for tmp in run_dir.glob(".tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    for old in run_dir.glob(".*-old"):
        dest = run_dir / old.name[1:-len("-old")]
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, dest)


def _report(run_dir: Path, cached: bool = False, resumed_from: int = 0) -> RunReport:
    row = pq.read_table(run_dir / "run.parquet").to_pylist()[0]
    saved = json.loads((run_dir / "config.json").read_text())
    losses = pq.read_table(run_dir / "loss.parquet", columns=["loss"])["loss"].to_pylist()
    return RunReport(
        run_id=row["run_id"], path=run_dir, selection=row["selection"], model=row["model"],
        method=row["method"], steps=row["steps"], epochs=row["epochs"],
        examples=row["examples"], skipped=saved["skipped"], tokens=row["tokens"],
        final_loss=row["final_loss"], seconds=row["seconds"], losses=losses, cached=cached,
        resumed_from=resumed_from)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_parquet(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_atomic(path, sink.getvalue().to_pybytes())


def _now() -> datetime:
    return datetime.now(timezone.utc)
