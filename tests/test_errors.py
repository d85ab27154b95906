"""The error family: every error carries its fix, however it was raised."""

import pickle

import pytest

import curate
from curate.errors import CurateError, InputError


def test_every_error_has_its_fix():
    assert CurateError("no such thing", fix="make it").fix == "make it"
    written = CurateError("no such thing\n  fix: make it")
    assert written.fix == "make it" and str(written) == "no such thing\n  fix: make it"
    assert CurateError("no remedy").fix is None
    located = InputError("not JSON", path="a.jsonl", row=3, fix="repair the row")
    assert str(located) == "a.jsonl, row 3: not JSON\n  fix: repair the row"
    assert (located.path, located.row, located.fix) == ("a.jsonl", 3, "repair the row")
    # a copy sent between processes (an engine worker) keeps message and fix
    copy = pickle.loads(pickle.dumps(located))
    assert str(copy) == str(located) and copy.fix == "repair the row"


def test_api_errors_tell_the_fix(tmp_path):
    with pytest.raises(CurateError) as info:
        curate.Store.open(tmp_path / "none", create=False)
    assert info.value.fix
