"""Fine-tune a small model on a selection (the SFT stage that closes the loop).

`encode` and `batches` turn conversations into assistant-only-loss examples and
length-grouped batches; `finetune` trains LoRA or full weights on a saved selection,
resumably, and saves the run under `<store>/runs/<run_id>/`; `load_run_model` loads a
finished run for evaluation; `prepare_scorer` trains the warm-up a gradient scorer asks for.
"""

from curate.tokens import Example, batches, encode
from curate.finetune.train import RUN_SCHEMA, RunReport, TrainConfig, finetune
from curate.finetune.warmup import prepare_scorer
from curate.models import load_run_model

__all__ = ["RUN_SCHEMA", "Example", "RunReport", "TrainConfig", "batches", "encode",
           "finetune", "load_run_model", "prepare_scorer"]
