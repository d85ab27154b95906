import pyarrow as pa
import pytest

from curate.schema import EXAMPLE_SCHEMA, MESSAGES, example_id, example_ids


def test_schema_columns_match_design():
    assert EXAMPLE_SCHEMA.names == ["id", "source", "source_row", "kind", "messages", "outcome",
                                    "meta"]
    assert EXAMPLE_SCHEMA.field("messages").type == MESSAGES


CASES = [
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
    [{"role": "user", "content": "  Hi\r\n"}, {"role": "assistant", "content": "Hello\r\n"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Héllo ✓\rworld"}],
    [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Hello"}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}],
]


@pytest.mark.parametrize("repeat", [1, 300])  # small inputs hash in Python, large in DuckDB
def test_vectorized_ids_equal_row_ids(repeat):
    cases = CASES * repeat
    arr = pa.array(cases, type=MESSAGES)
    assert example_ids(arr).to_pylist() == [example_id(m) for m in cases]
    # a slice keeps its parent's offsets: the ids must not shift
    assert example_ids(arr.slice(2, 600)).to_pylist() == [example_id(m) for m in cases[2:602]]


def test_id_ignores_outer_whitespace_and_line_endings_only():
    a, b, _, swapped, _ = (example_id(m) for m in CASES)
    assert a == b  # CRLF and outer spaces do not make a new example
    assert a != swapped  # roles are part of the content
    inner = [{"role": "user", "content": "H i"}, {"role": "assistant", "content": "Hello"}]
    assert example_id(inner) != a


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(n):
    arr = pa.array(CASES[:n], type=MESSAGES)
    assert len(example_ids(arr)) == n
