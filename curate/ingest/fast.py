"""Vectorized path for flat records (Alpaca, prompt/completion, question/answer).

Most large instruction corpora are flat. This path takes a whole chunk as an Arrow
table, as `sources` parses it (Arrow's multithreaded JSON reader for JSON lines, see
`sources.parse_jsonl`; Parquet and CSV batches; or records parsed by orjson), and maps
it with Arrow kernels, with no per-row Python. It gives the same examples as
`formats.map_flat`: any row it is not sure about (nulls, wrong types, ReAct text, empty
responses, outcome or system fields, oversized text) goes back to the per-row path, and
so does a chunk that does not fit at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.ingest.formats import (EOS_MARKERS, _EOS, INPUT_KEYS, OUTCOME_KEYS, REFERENCE_KEYS,
                                   RESPONSE_KEYS, TRACE_KEYS)

_REACT_ACTION = r"(?m)^Action(?:\s*\d+)?\s*:"
_PLAIN = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer,
          pa.types.is_floating, pa.types.is_boolean, pa.types.is_null)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


@dataclass
class Flat:
    keep: np.ndarray  # table positions mapped here
    slow: np.ndarray  # table positions for the per-row path
    user: pa.Array
    response: pa.Array
    meta: pa.Array
    fields: str = ""  # which columns became the turns, as formats.Row.fields says


def _where(mask: pa.Array, values: pa.Array, fn, default: pa.Array) -> pa.Array:
    """fn(values) on the rows where mask is true only, `default` elsewhere: for costly
    kernels (regexes) that only a few rows need."""
    idx = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
    if not len(idx):
        return default
    return pc.replace_with_mask(default, mask, fn(values.take(idx)))


def map_flat(table: pa.Table, user_key: str, limit: int) -> Flat | None:
    """Map a flat table; None when the table's columns do not fit the vectorized path."""
    names = table.column_names
    rkey = next((k for k in RESPONSE_KEYS if k in names), None)
    ikey = next((k for k in INPUT_KEYS if k in names), None)
    if user_key not in names or rkey is None or "system" in names or \
            any(k in names for k in OUTCOME_KEYS + TRACE_KEYS) or \
            any(k in names and k != rkey for k in REFERENCE_KEYS):
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
        has_input = pc.invert(_blank(extra))
        user = pc.if_else(pc.fill_null(has_input, False),
                          pc.binary_join_element_wise(user, extra, "\n\n"), user)

    # end-of-text markers: a cheap suffix test picks the rows the regex has to see
    tail = pc.utf8_rtrim_whitespace(response)
    marked = pc.ends_with(tail, EOS_MARKERS[0])
    for marker in EOS_MARKERS[1:]:
        marked = pc.or_(marked, pc.ends_with(tail, marker))
    marked = pc.fill_null(marked, False)
    eos = _where(marked, response, lambda r: pc.utf8_trim_whitespace(pc.struct_field(
        pc.extract_regex(r, f"(?P<eos>{_EOS.pattern})"), "eos")), pa.nulls(len(response), pa.string()))
    stripped = _where(marked, response, lambda r: pc.replace_substring_regex(r, _EOS.pattern, ""),
                      response)
    acting = pc.fill_null(pc.match_substring(response, "Action"), False)
    react = _where(acting, response, lambda r: pc.match_substring_regex(r, _REACT_ACTION),
                   pa.array(np.zeros(len(response), bool)))
    size = pc.add(pc.binary_length(user), pc.binary_length(stripped))
    slow = pc.or_kleene(pc.or_kleene(pc.is_null(user), pc.is_null(response)),
                        pc.or_kleene(_blank(stripped), react))
    slow = pc.or_kleene(slow, pc.greater(size, limit))
    for n in extra_names:  # absent and null look alike in Arrow: let the row path decide
        column = table[n].combine_chunks()
        if column.null_count:
            slow = pc.or_kleene(slow, pc.is_null(column))
    slow = np.asarray(pc.fill_null(slow, True).to_numpy(zero_copy_only=False), dtype=bool)

    if extra_names:
        import polars as pl

        frame = pl.from_arrow(table.select(extra_names))
        meta = frame.select(pl.struct(pl.all()).struct.json_encode().alias("m")) \
            .to_arrow()["m"].combine_chunks().cast(pa.string())
    else:
        meta = pa.nulls(table.num_rows, pa.string())
    note = pc.binary_join_element_wise('"_curate":{"eos_stripped":"', eos, '"}', "")
    with_note = pc.if_else(
        pc.is_null(meta),
        pc.binary_join_element_wise("{", note, "}", ""),
        pc.binary_join_element_wise(pc.utf8_slice_codeunits(meta, 0, -1), ",", note, "}", ""))
    meta = pc.if_else(pc.is_null(eos), meta, with_note)

    keep = np.flatnonzero(~slow)
    take = pa.array(keep)
    fields = f"user={user_key}{'+' + ikey if ikey else ''}, response={rkey}"
    return Flat(keep, np.flatnonzero(slow), user.take(take), stripped.take(take),
                meta.take(take), fields)


def _blank(text: pa.Array) -> pa.Array:
    """Empty or only whitespace (null stays null)."""
    return pc.or_kleene(pc.equal(pc.utf8_length(text), 0), pc.utf8_is_space(text))
