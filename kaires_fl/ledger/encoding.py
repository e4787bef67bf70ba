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

#: Largest ledger record a decoder accepts (bytes): a block of ``max_block_txs``
#: transactions with their payloads, or a proof.
MAX_RECORD_BYTES = 64 * 2**20
#: Deepest nesting of lists/objects a ledger record may have (a block record is 5 deep
#: around a transaction payload; payloads get the rest).
MAX_DEPTH = 48
# Every byte but the JSON brackets and the string delimiter.
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def reference_canonical(obj: Any) -> bytes:
    """:func:`canonical` by the standard library alone (the definition of the encoding)."""
    try:
        return _ENCODER.encode(obj).encode("ascii")
    except (TypeError, ValueError, RecursionError) as exc:
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
            # A right-sized copy: orjson's bytes keep its whole growth buffer (a 40-byte
            # value holds 4 KiB, a 3 KB one 32 KiB), and state entries, cached tx bodies
            # and block records live as long as the node does.
            return memoryview(out).tobytes()
    return reference_canonical(obj)


def json_depth_exceeds(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether the JSON text ``data`` nests lists/objects deeper than ``limit``.

    Works on the brackets outside strings only (escaped quotes and backslashes removed
    first), peeling innermost pairs ``limit`` times at C speed; exact for valid JSON (any
    other input is refused by the parser anyway).
    """
    if data.count(b"[") + data.count(b"{") <= limit:  # counts opens in strings too: safe
        return False
    s = bytes(data).replace(b"\\\\", b"").replace(b'\\"', b"")
    s = b"".join(s.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    for _ in range(limit):
        if not s:
            return False
        t = s.replace(b"[]", b"").replace(b"{}", b"")
        if t == s:  # unbalanced: not JSON; the parser will say so
            return False
        s = t
    return bool(s)


def decode_canonical(data: bytes) -> Any:
    """Inverse of :func:`canonical`, for bytes from anyone (a peer, a file).

    Pre: none (any value is accepted). Post: the returned value re-encodes to exactly
    ``data``, is at most :data:`MAX_DEPTH` deep and ``data`` is at most
    :data:`MAX_RECORD_BYTES` long.

    Raises
    ------
    EncodingError
        if ``data`` is not bytes, too large, too deep, not valid JSON or not in
        canonical form — never another exception.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"a ledger record is bytes, got {type(data).__name__}")
    if len(data) > MAX_RECORD_BYTES:
        raise EncodingError(
            f"ledger record of {len(data)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit"
        )
    if json_depth_exceeds(data):
        raise EncodingError(f"ledger record nests deeper than {MAX_DEPTH} levels")
    try:
        return _decode_canonical(data)
    except RecursionError as exc:  # pragma: no cover - bounded by the depth check
        raise EncodingError("ledger record nests too deeply") from exc


def _decode_canonical(data: bytes) -> Any:
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


def expect_int(value: Any, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """``value`` if it is an int (not a bool) in ``[lo, hi]``, else ``EncodingError``."""
    if type(value) is not int or not lo <= value <= hi:
        raise EncodingError(f"{what} must be an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def expect_str(value: Any, what: str, max_len: int = 1 << 16) -> str:
    """``value`` if it is a str of at most ``max_len`` characters, else ``EncodingError``."""
    if type(value) is not str or len(value) > max_len:
        raise EncodingError(f"{what} must be a string of <= {max_len} chars, got {value!r:.40}")
    return value


def expect_list(value: Any, what: str, max_len: int = 1 << 20) -> list[Any]:
    """``value`` if it is a list of at most ``max_len`` items, else ``EncodingError``."""
    if type(value) is not list or len(value) > max_len:
        raise EncodingError(f"{what} must be a list of <= {max_len} items, got {value!r:.40}")
    return value


def expect_fields(value: Any, what: str, fields: frozenset[str] | set[str]) -> dict[str, Any]:
    """``value`` if it is a dict with exactly the keys ``fields``, else ``EncodingError``."""
    if type(value) is not dict or value.keys() != fields:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise EncodingError(f"{what} must have exactly the fields {sorted(fields)}, got {got}")
    return value
