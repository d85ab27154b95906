"""The canonical example: one Arrow schema for every input format.

An example's `id` is the MD5 of its normalized messages (roles and contents only), so
the same conversation gets the same id in any file, format, run or machine.
"""

from __future__ import annotations

import functools
import hashlib
import threading

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

# Separators that cannot occur in normal text keep the hash input unambiguous.
_SMALL = 1024
_HASH_LOCK = threading.Lock()
_FIELD_SEP = "\x1f"
_TURN_SEP = "\x1e"


_TRIM = " \t\n\r\f\v"


def normalize_content(text: str) -> str:
    """The content as hashed: CRLF/CR line ends become LF, outer ASCII whitespace dropped."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip(_TRIM)


def example_id(messages: list[dict]) -> str:
    """Content hash of one conversation; equal to `example_ids` on the same messages."""
    text = _TURN_SEP.join(
        m["role"] + _FIELD_SEP + normalize_content(m["content"] or "") for m in messages
    )
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def example_ids(messages: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Vectorized `example_id` over a `MESSAGES` array: Arrow kernels plus DuckDB's md5."""
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    flat = pc.list_flatten(messages)
    content = pc.fill_null(flat.field("content"), "")
    if _may_contain_cr(content):  # rare; the replace kernels are slow
        content = pc.replace_substring(content, "\r\n", "\n")
        content = pc.replace_substring(content, "\r", "\n")
    content = pc.utf8_trim(content, characters=_TRIM)
    turns = pc.binary_join_element_wise(flat.field("role"), content, _FIELD_SEP)
    offsets = pc.subtract(messages.offsets, messages.offsets[0])
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, turns), _TURN_SEP)
    if len(joined) <= _SMALL:  # a DuckDB round trip costs ~2 ms: hash small inputs here
        md5 = hashlib.md5
        return pa.array([md5(t.encode()).hexdigest() for t in joined.to_pylist()], pa.string())
    with _HASH_LOCK:
        ids = _hash_connection().from_arrow(pa.table({"t": joined})).project("md5(t)")
        return ids.to_arrow_table().column(0).combine_chunks().cast(pa.string())


@functools.cache
def _hash_connection():
    import duckdb

    return duckdb.connect()


def _may_contain_cr(strings: pa.Array) -> bool:
    """Whether the string data holds a CR byte (scans the data buffer at memory speed)."""
    import numpy as np

    data = strings.buffers()[2]
    return data is not None and bool((np.frombuffer(data, np.uint8) == 13).any())
