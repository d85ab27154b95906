"""Vectorized path for flat JSON-lines files (Alpaca, prompt/completion, question/answer).

Most large instruction corpora are flat JSONL. This path parses a whole chunk with
Arrow's multithreaded JSON reader and maps it with Arrow kernels, with no per-row
Python. It gives the same examples as `formats.map_flat`: any row it is not sure about
(nulls, wrong types, ReAct text, empty responses, outcome or system fields, odd lines)
goes back to the per-row path, and so does a whole chunk that Arrow cannot parse.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from curate.ingest.formats import _EOS, INPUT_KEYS, OUTCOME_KEYS, RESPONSE_KEYS

_REACT_ACTION = r"(?m)^Action(?:\s*\d+)?\s*:"
_EOS_AT_END = _EOS.pattern
_PLAIN = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
          pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def line_spans(chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of every line of a chunk of complete lines."""
    buf = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero(buf == 10)
    if len(chunk) and chunk[-1:] != b"\n":
        ends = np.append(ends, len(chunk))
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else ends
    return starts, ends


def flat_columns(chunk: bytes, user_key: str, limit: int):
    """Parse a chunk and map it vectorized.

    Returns None when the chunk must take the per-row path, else
    (rows, user, response, meta, slow_lines) where `slow_lines` lists line indexes
    (relative to the chunk) that need the per-row path.
    """
    starts, ends = line_spans(chunk)
    if not len(starts):
        return None
    buf = np.frombuffer(chunk, np.uint8)
    lengths = ends - starts
    nonblank = lengths > 0
    # every non-blank line must open an object: anything else is for the careful path
    if not np.all(buf[starts[nonblank]] == ord("{")) or np.any(lengths > limit):
        return None
    try:
        # threads pay off on big chunks only; a small file parses 5x faster without
        options = pajson.ReadOptions(block_size=len(chunk) + 1, use_threads=len(chunk) > 1 << 20)
        table = pajson.read_json(io.BytesIO(chunk), read_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    lines = np.flatnonzero(nonblank)
    if table.num_rows != len(lines):
        return None
    try:
        table.validate(full=True)  # Arrow's JSON reader passes invalid UTF-8 through
    except pa.ArrowInvalid:
        return None
    names = table.column_names
    rkey = next((k for k in RESPONSE_KEYS if k in names), None)
    ikey = next((k for k in INPUT_KEYS if k in names), None)
    if user_key not in names or rkey is None or "system" in names or \
            any(k in names for k in OUTCOME_KEYS):
        return None
    if not all(_is_text(table.schema.field(k).type) for k in (user_key, rkey, ikey) if k):
        return None
    extra_names = [n for n in names if n not in (user_key, rkey, ikey)]
    for n in extra_names:
        t = table.schema.field(n).type
        if not (any(p(t) for p in _PLAIN) or pa.types.is_list(t) or pa.types.is_struct(t)):
            return None  # e.g. an inferred timestamp: keep the text exactly as written

    user = table[user_key].combine_chunks().cast(pa.string())
    response = table[rkey].combine_chunks().cast(pa.string())
    if ikey:
        extra = table[ikey].combine_chunks().cast(pa.string())
        has_input = pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(extra)), 0),
                                 False)
        joined = pc.binary_join_element_wise(user, extra, "\n\n")
        user = pc.if_else(has_input, joined, user)

    eos = pc.struct_field(pc.extract_regex(response, r"(?P<eos>" + _EOS_AT_END + ")"), "eos")
    stripped = pc.replace_substring_regex(response, _EOS_AT_END, "")
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(stripped)), 0)
    react = pc.match_substring_regex(response, _REACT_ACTION)
    slow = pc.or_kleene(pc.or_kleene(pc.is_null(user), pc.is_null(response)),
                        pc.or_kleene(empty, react))
    for n in extra_names:  # absent and null look alike in Arrow: let the row path decide
        if table[n].null_count:
            slow = pc.or_kleene(slow, pc.is_null(table[n].combine_chunks()))
    slow = pc.fill_null(slow, True)
    if extra_names:
        import polars as pl

        frame = pl.from_arrow(table.select(extra_names))
        meta = frame.select(pl.struct(pl.all()).struct.json_encode().alias("m")) \
            .to_arrow()["m"].combine_chunks().cast(pa.string())
    else:
        meta = pa.nulls(table.num_rows, pa.string())
    note = pc.binary_join_element_wise(
        '"_curate":{"eos_stripped":"', pc.utf8_trim_whitespace(eos), '"}', "")
    with_note = pc.if_else(
        pc.is_null(meta),
        pc.binary_join_element_wise("{", note, "}", ""),
        pc.binary_join_element_wise(pc.utf8_slice_codeunits(meta, 0, -1), ",", note, "}", ""))
    meta = pc.if_else(pc.is_null(eos), meta, with_note)

    keep = pc.invert(slow)
    slow_lines = lines[np.asarray(slow.to_numpy(zero_copy_only=False), dtype=bool)]
    return (pa.array(lines).filter(keep), user.filter(keep), stripped.filter(keep),
            meta.filter(keep), slow_lines, starts, ends)
