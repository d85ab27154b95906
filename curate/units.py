"""One unit for sizes everywhere the tool prints them: binary (KiB, MiB, GiB), the unit
of `--max-record-mb` (4 means 4 MiB = 4 x 2**20 bytes)."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int | float) -> str:
    """A byte count for people: '512 B', '1.5 KiB', '4.0 MiB', '2.3 GiB' (powers of 1024,
    one decimal)."""
    n = float(n)
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in _UNITS:
        n /= 1024
        if round(abs(n), 1) < 1024 or unit == _UNITS[-1]:
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")
