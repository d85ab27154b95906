"""curate: choose LLM fine-tuning data.

Ingest instruction and trace corpora into one Parquet store with a DuckDB catalog,
score, select, export, and measure selections on a held-out target.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("curate")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

from curate.errors import CurateError  # noqa: E402

__all__ = ["CurateError", "Query", "Store", "__version__"]


def __getattr__(name: str):
    """`curate.Store` and `curate.Query` (the Python API, curate/api.py), imported on
    first use so that `import curate` stays light."""
    if name in ("Store", "Query"):
        from curate import api

        return getattr(api, name)
    raise AttributeError(f"module 'curate' has no attribute {name!r}")
