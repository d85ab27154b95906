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


__all__ = ["CurateError", "__version__"]
