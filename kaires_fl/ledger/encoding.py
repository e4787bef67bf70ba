"""Canonical encoding of ledger values (JSON subset, byte-exact).

Ledger values are JSON values (dict with str keys, list, str, int, float, bool, None);
bytes are carried as lowercase hex strings. :func:`canonical` is the one encoding
that is hashed and signed; :func:`decode_canonical` refuses any byte string that is
not exactly the canonical encoding of what it decodes to, so a stored record cannot
be altered without changing its bytes *and* its meaning.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kaires_fl.errors import EncodingError

_orjson: Any
try:  # optional accelerator; the encoding is byte-identical without it
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

# Dataclasses, datetimes and subclasses of str/int/dict/list go to the standard library
# (which refuses the first two). orjson also encodes enum.Enum and uuid.UUID values,
# which the standard library refuses: such values are not ledger values (contracts must
# write plain JSON types) and a node without orjson would refuse them.
_ORJSON_OPTS = (
    (
        _orjson.OPT_SORT_KEYS
        | _orjson.OPT_PASSTHROUGH_DATACLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_SUBCLASS
    )
    if _orjson is not None
    else 0
)
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False, check_circular=False
)
# orjson output that is also the standard library's: printable-ASCII strings without
# escapes, integers, true/false and punctuation. Floats (formatted differently, e.g.
# 1e-7 vs 1e-07), null (NaN and inf become null in orjson), escapes and non-ASCII text
# do not match and are re-encoded by the standard library.
_PLAIN = re.compile(rb'(?:"[ !#-\[\]-~]*+"|[-0-9,:\[\]{}]++|true|false)*+')


def reference_canonical(obj: Any) -> bytes:
    """:func:`canonical` by the standard library alone (the definition of the encoding)."""
    try:
        return _ENCODER.encode(obj).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise EncodingError(
            f"value is not a canonical ledger value ({exc}); use dict/list/str/int/bool/None "
            "and hex strings for bytes"
        ) from exc


def canonical(obj: Any) -> bytes:
    """Canonical bytes of a JSON value (sorted keys, no spaces, ASCII only).

    Post-condition: equal to :func:`reference_canonical` byte for byte, whether or not
    orjson is installed (nodes with and without it must agree on every hash). orjson
    output is used only when it matches ``_PLAIN``; anything else (floats, null,
    escapes, non-ASCII text, big ints, non-str keys) is encoded by the standard library.
    """
    if type(obj) is int:  # counters, balances: the common small case
        return str(obj).encode("ascii")
    if _orjson is not None:
        try:
            out: bytes = _orjson.dumps(obj, option=_ORJSON_OPTS)
        except TypeError:
            return reference_canonical(obj)
        if _PLAIN.fullmatch(out) is not None:
            return out
    return reference_canonical(obj)


def decode_canonical(data: bytes) -> Any:
    """Inverse of :func:`canonical`.

    Raises
    ------
    EncodingError
        if ``data`` is not valid JSON or not in canonical form.
    """
    if _orjson is not None:
        try:
            obj = _orjson.loads(data)
        except _orjson.JSONDecodeError:
            pass
        else:
            # orjson reads integers beyond 64 bits as floats: such a record re-encodes
            # differently and is decided by the standard library below.
            if canonical(obj) == bytes(data):
                return obj
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
