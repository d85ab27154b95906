"""Fingerprints: the one way cache keys, run ids and content identities are hashed.

A fingerprint is the hex digest of a value: bytes as they are, a str as UTF-8, anything
else as canonical JSON (sorted keys, values JSON cannot hold written with str()). The
digest and length each caller uses are part of keys already on disk (a store's score,
gradient and run folders), so they are arguments, not a choice made here.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def fingerprint(value: Any, size: int | None = None, algo: str = "sha1") -> str:
    """Hex digest of `value` (see the module doc), cut to `size` characters if given."""
    if isinstance(value, str):
        data = value.encode()
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        data = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.new(algo, data).hexdigest()[:size]
