"""The canonical example: one Arrow schema for every input format.

An example's `id` is the XXH3-128 hash (hex) of its normalized messages (roles and
contents only), so the same conversation gets the same id in any file, format, run or
machine. XXH3 is not cryptographic; ids only need to tell content apart, at memory speed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROLES = ("system", "user", "assistant", "tool")
KINDS = ("instruction", "conversation", "trace")

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)
OUTCOME = pa.struct([("success", pa.bool_()), ("reward", pa.float64())])

EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("messages", MESSAGES, nullable=False),
        pa.field("outcome", OUTCOME),
        pa.field("meta", pa.string()),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("path", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)

DUPLICATE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),  # the id of the example kept in the store
        pa.field("source", pa.string()),
        pa.field("source_row", pa.int64()),
        pa.field("path", pa.string()),
        pa.field("run_id", pa.string()),
    ]
)

# A saved selection: one manifest row, its members in rank order, and what its dedup
# steps dropped (which kept example each dropped one duplicated).
SELECTION_SCHEMA = pa.schema(
    [
        pa.field("name", pa.string()),
        pa.field("method", pa.string()),
        pa.field("params", pa.string()),  # JSON
        pa.field("budget", pa.string()),
        pa.field("size", pa.int64()),
        pa.field("tokens", pa.int64()),  # null when the store has no token counts
        pa.field("pool_size", pa.int64()),
        pa.field("dropped", pa.int64()),
        pa.field("masked", pa.int64()),  # members with a loss mask (selection_masks)
        pa.field("pool_where", pa.string()),
        pa.field("fingerprint", pa.string()),  # of the input pool and score configurations
        pa.field("recipe", pa.string()),  # the recipe text, for recipe selections
        pa.field("curate_version", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("seconds", pa.float64()),
    ]
)

SELECTION_MEMBER_SCHEMA = pa.schema(
    [
        pa.field("selection", pa.string()),
        pa.field("id", pa.string()),
        pa.field("rank", pa.int64()),  # 1 = first pick
        pa.field("gain", pa.float64()),  # what the pick added (marginal gain, score, ...)
        pa.field("reason", pa.string()),
    ]
)

SELECTION_DROPPED_SCHEMA = pa.schema(
    [
        pa.field("selection", pa.string()),
        pa.field("id", pa.string()),
        pa.field("duplicate_of", pa.string()),  # the kept example it repeats
        pa.field("similarity", pa.float32()),  # cosine; 1 for exact text duplicates
        pa.field("step", pa.string()),  # which step dropped it
    ]
)

# Loss masks a selection carries (token cleaning, trace selection): one row per member
# that has a mask. `turns`: one flag per assistant turn, False = no loss on that turn;
# `tokens`: 0/1 per trained token of the last assistant turn (content then end-of-turn,
# contract in curate/tokens.py), 0 = no loss. Null = all trained.
SELECTION_MASK_SCHEMA = pa.schema(
    [
        pa.field("selection", pa.string()),
        pa.field("id", pa.string()),
        pa.field("turns", pa.list_(pa.bool_())),
        pa.field("tokens", pa.list_(pa.uint8())),
        pa.field("reason", pa.string()),  # why it was masked, for people
    ]
)

# A fine-tuning run (runs/<run_id>/run.parquet, written when it finishes) and the
# evaluations of runs or base models on targets (evals/<eval_id>/...).
RUN_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()),
        pa.field("selection", pa.string()),
        pa.field("model", pa.string()),
        pa.field("method", pa.string()),  # lora | full
        pa.field("seed", pa.int64()),
        pa.field("steps", pa.int64()),
        pa.field("epochs", pa.float64()),
        pa.field("examples", pa.int64()),
        pa.field("tokens", pa.int64()),  # trained tokens per epoch
        pa.field("final_loss", pa.float64()),
        pa.field("seconds", pa.float64()),
        pa.field("status", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("curate_version", pa.string()),
        pa.field("config", pa.string()),  # JSON
        pa.field("path", pa.string()),
    ]
)

EVAL_SCHEMA = pa.schema(
    [
        pa.field("eval_id", pa.string()),
        pa.field("run_id", pa.string()),  # "base" for the untouched model
        pa.field("model", pa.string()),
        pa.field("target", pa.string()),
        pa.field("target_fingerprint", pa.string()),
        pa.field("examples", pa.int64()),  # scored target examples
        pa.field("tokens", pa.int64()),  # scored reference tokens
        pa.field("nll", pa.float64()),  # mean per-token NLL of the reference responses
        pa.field("accuracy", pa.float64()),  # exact match where answers are extractable
        pa.field("accuracy_examples", pa.int64()),
        pa.field("overlap", pa.int64()),  # target examples also in the run's training data
        pa.field("seconds", pa.float64()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        pa.field("curate_version", pa.string()),
    ]
)

EVAL_EXAMPLE_SCHEMA = pa.schema(
    [
        pa.field("eval_id", pa.string()),
        pa.field("id", pa.string()),
        pa.field("nll", pa.float64()),  # mean over the example's response tokens
        pa.field("tokens", pa.int64()),
        pa.field("correct", pa.bool_()),  # null without an accuracy check
        pa.field("reason", pa.string()),  # why it was not scored
    ]
)

# One run of a Prefect flow over the store (flow_runs/<flow_run_id>/run.parquet) and
# what it changed; counts are 0 when nothing was new (the work was cached).
FLOW_RUN_SCHEMA = pa.schema(
    [
        pa.field("flow_run_id", pa.string()),  # Prefect's flow run id
        pa.field("flow_run_name", pa.string()),
        pa.field("flow", pa.string()),
        pa.field("status", pa.string()),  # completed | failed
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
        pa.field("seconds", pa.float64()),
        pa.field("files_ingested", pa.int64()),  # files read (new or changed)
        pa.field("files_skipped", pa.int64()),  # already ingested with the same options
        pa.field("rows_new", pa.int64()),  # examples stored (new ids)
        pa.field("duplicates", pa.int64()),
        pa.field("quarantined", pa.int64()),
        pa.field("rows_scored", pa.string()),  # JSON {scorer: rows scored by this run}
        pa.field("selections", pa.string()),  # JSON [names recomputed by this run]
        pa.field("exports", pa.string()),  # JSON [paths written by this run]
        pa.field("compare", pa.string()),  # leaderboard folder, when compared
        pa.field("report", pa.string()),  # report path
        pa.field("cached_tasks", pa.int64()),  # tasks answered from the cache
        pa.field("error", pa.string()),
        pa.field("parameters", pa.string()),  # JSON
        pa.field("curate_version", pa.string()),
    ]
)

# Separators that cannot occur in normal text keep the hash input unambiguous.
_FIELD_SEP = "\x1f"
_TURN_SEP = "\x1e"


_TRIM = " \t\n\r\f\v"


def normalize_content(text: str) -> str:
    """The content as hashed: CRLF/CR line ends become LF, outer ASCII whitespace dropped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip(_TRIM)


def example_id(messages: list[dict]) -> str:
    """Content hash of one conversation (XXH3-128, hex); equal to `example_ids`."""
    import xxhash

    text = _TURN_SEP.join(
        m["role"] + _FIELD_SEP + normalize_content(m["content"] or "") for m in messages
    )
    return xxhash.xxh3_128_hexdigest(text.encode("utf-8"))


def example_ids(messages: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Vectorized `example_id` over a `MESSAGES` array.

    Normalizing and joining the turns are Arrow kernels; the hash then runs over slices
    of the joined strings' buffer, with no Python string per row.
    """
    import xxhash

    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    if len(messages) == 0:
        return pa.array([], pa.string())
    flat = pc.list_flatten(messages)
    content = pc.fill_null(flat.field("content"), "")
    if _may_contain_cr(content):  # rare; the replace kernels are slow
        content = pc.replace_substring(content, "\r\n", "\n")
        content = pc.replace_substring(content, "\r", "\n")
    content = pc.utf8_trim(content, characters=_TRIM)
    turns = pc.binary_join_element_wise(flat.field("role"), content, _FIELD_SEP)
    offsets = pc.subtract(messages.offsets, messages.offsets[0])
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, turns), _TURN_SEP)
    joined = joined.cast(pa.large_string())
    _, offs, data = joined.buffers()
    ends = np.frombuffer(offs, np.int64)[joined.offset: joined.offset + len(joined) + 1].tolist()
    view = memoryview(data) if data is not None else memoryview(b"")
    digest = xxhash.xxh3_128_hexdigest
    return pa.array([digest(view[a:b]) for a, b in zip(ends[:-1], ends[1:])], pa.string())


def _may_contain_cr(strings: pa.Array) -> bool:
    """Whether the string data holds a CR byte (scans the data buffer at memory speed)."""
    data = strings.buffers()[2]
    return data is not None and bool((np.frombuffer(data, np.uint8) == 13).any())
