"""Canonical encoding of ledger values (JSON subset, byte-exact).

Ledger values are JSON values (dict with str keys, list, str, int, float, bool, None);
bytes are carried as lowercase hex strings. :func:`canonical` is the one encoding
that is hashed and signed; :func:`decode_canonical` refuses any byte string that is
not exactly the canonical encoding of what it decodes to, so a stored record cannot
be altered without changing its bytes *and* its meaning.
"""

from __future__ import annotations

import json
from typing import Any

from kaires_fl.errors import EncodingError

_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)


def canonical(obj: Any) -> bytes:
    """Canonical bytes of a JSON value (sorted keys, no spaces, ASCII only)."""
    if type(obj) is int:  # counters, balances: the common small case
        return str(obj).encode("ascii")
    try:
        return _ENCODER.encode(obj).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise EncodingError(
            f"value is not a canonical ledger value ({exc}); use dict/list/str/int/bool/None "
            "and hex strings for bytes"
        ) from exc


def decode_canonical(data: bytes) -> Any:
    """Inverse of :func:`canonical`.

    Raises
    ------
    EncodingError
        if ``data`` is not valid JSON or not in canonical form.
    """
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise EncodingError(f"not a JSON ledger record: {exc}") from exc
    if canonical(obj) != bytes(data):
        raise EncodingError("ledger record is not in canonical form (altered or re-encoded)")
    return obj


def hex_bytes(value: Any, size: int | None = None, what: str = "value") -> bytes:
    """Parse a lowercase hex string into bytes (of ``size`` bytes if given)."""
    if not isinstance(value, str) or value != value.lower():
        raise EncodingError(f"{what} must be a lowercase hex string, got {value!r:.40}")
    try:
        out = bytes.fromhex(value)
    except ValueError as exc:
        raise EncodingError(f"{what} is not hex: {value!r:.40}") from exc
    if size is not None and len(out) != size:
        raise EncodingError(f"{what} must be {size} bytes, got {len(out)}")
    return out
