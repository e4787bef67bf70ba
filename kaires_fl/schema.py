"""One typed schema for every protocol message (msgspec Structs).

Every message a peer can send is a :class:`Message`: a frozen msgspec Struct whose fields
carry declared types, ranges and size limits. The wire format is its canonical MessagePack
encoding (:func:`encode`: fields in declaration order, dict keys sorted), and what a
signature covers is that encoding of *every* field but the signature itself, behind a
domain-separating context (:func:`signing_bytes`) — type tags, field-element tags, shapes
and lengths included, so nothing a relay can change (a dtype, a shape, a field name) is
left outside a signature. Decoding (:func:`decode`) validates types, ranges and sizes and
raises :class:`~kaires_fl.errors.EncodingError` — never another exception — so a service
can refuse a malformed message without dying.

Structs have no ``__dict__``: nothing (a cached digest, a flag) can be attached to a
message after it is built, and frozen ones cannot be mutated in place.

Pre-declared field types:

* :data:`Index` (party indices), :data:`Count`, :data:`U63`, :data:`Hex32` (ids and
  hashes), :data:`Bytes32`, :data:`PublicKey`, :data:`Signature` (64 bytes, or empty while
  unsigned), :data:`Label` (short user-chosen strings);
* :class:`Elements`: a field-element array with its field and shape (decoded lazily with
  :meth:`Elements.array`, which checks that every element is canonical);
* :class:`~kaires_fl.crypto.group.Point` and :class:`~kaires_fl.crypto.group.Scalar`
  (32 bytes on the wire, validated on decode by their ``from_bytes``).
"""

from __future__ import annotations

import hashlib
import math
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np

from kaires_fl.crypto.group import Point, Scalar
from kaires_fl.crypto.sign import Identity, is_valid
from kaires_fl.errors import EncodingError

#: Largest encoded message a decoder accepts (bytes). A submission part of a 10^6-parameter
#: update is ≈ 8 MB per proof repetition; 256 MiB leaves room for batches of them.
MAX_MESSAGE_BYTES = 256 * 2**20
#: Largest field-element array (elements) one message may carry.
MAX_ELEMENTS = 2**25
#: Largest number of dimensions of an :class:`Elements` array.
MAX_DIMS = 3

Index = Annotated[int, msgspec.Meta(ge=0, lt=2**16)]
Count = Annotated[int, msgspec.Meta(ge=0, lt=2**40)]
#: Non-negative int64 (msgspec bounds must fit an int64).
U63 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
Hex32 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}\Z")]  # \Z: "$" lets "\n" in
Bytes32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
PublicKey = Bytes32
Signature = Annotated[bytes, msgspec.Meta(max_length=64)]
Label = Annotated[str, msgspec.Meta(max_length=256)]
Blob = Annotated[bytes, msgspec.Meta(max_length=MAX_MESSAGE_BYTES)]

FIELDS: dict[str, Any] = {}


def _fields() -> dict[str, Any]:
    if not FIELDS:
        from kaires_fl.arith.field import Field64, Field128

        FIELDS.update({"Field64": Field64, "Field128": Field128})
    return FIELDS


class Message(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag=True):
    """Base of every protocol message; the tag (the class name) travels on the wire."""


class Elements(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A field-element array: ``field`` name, ``shape`` and canonical little-endian bytes.

    Post (after decoding): ``len(data) == prod(shape) · element size`` and the shape has at
    most :data:`MAX_DIMS` dimensions and :data:`MAX_ELEMENTS` elements. Whether every
    element is canonical (< p) is checked by :meth:`array`.
    """

    field: Literal["Field64", "Field128"]
    shape: Annotated[
        tuple[Annotated[int, msgspec.Meta(ge=0, le=MAX_ELEMENTS)], ...],
        msgspec.Meta(max_length=MAX_DIMS),
    ]
    data: Blob

    def __post_init__(self) -> None:
        n = math.prod(self.shape)
        if n > MAX_ELEMENTS:
            raise EncodingError(f"{n} elements exceed the limit of {MAX_ELEMENTS}")
        size = 8 if self.field == "Field64" else 16
        if len(self.data) != n * size:
            raise EncodingError(
                f"{len(self.data)} bytes do not hold {n} {self.field} elements of shape "
                f"{self.shape}"
            )

    @classmethod
    def of(cls, F: Any, array: Any) -> Elements:
        """Encode ``array`` (elements of field ``F``)."""
        a = np.asarray(array, dtype=F.DTYPE)
        return cls(F.__name__, tuple(int(d) for d in a.shape), F.encode(a))

    def array(self, F: Any | None = None) -> np.ndarray:
        """The elements as a new array of their field's dtype.

        Raises ``EncodingError`` if ``F`` is given and is not this array's field, or if an
        element is not canonical.
        """
        if F is not None and F.__name__ != self.field:
            raise EncodingError(
                f"expected {F.__name__} elements, got {self.field}: the sender used another "
                "field than the job's circuit"
            )
        return _fields()[self.field].decode(self.data, self.shape)

    def expect(self, F: Any, shape: Sequence[int]) -> np.ndarray:
        """:meth:`array`, checking the field and the exact ``shape`` (else ``EncodingError``)."""
        if tuple(self.shape) != tuple(shape):
            raise EncodingError(
                f"expected {F.__name__} elements of shape {tuple(shape)}, got {self.shape}"
            )
        return self.array(F)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, Point | Scalar):
        return obj.to_bytes()
    if isinstance(obj, np.integer):
        return int(obj)
    raise NotImplementedError(f"{type(obj).__name__} is not part of the message schema")


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Point or type_ is Scalar:
        if not isinstance(obj, bytes):
            raise ValueError(f"a {type_.__name__} is 32 bytes on the wire")
        try:
            return type_.from_bytes(obj)
        except EncodingError as exc:
            raise ValueError(str(exc)) from None
    raise NotImplementedError(f"{type_!r} is not part of the message schema")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook, order="deterministic")
_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}

T = TypeVar("T")


def encode(msg: Any) -> bytes:
    """The canonical encoding of ``msg`` (a :class:`Message`, or any schema value)."""
    return _ENCODER.encode(msg)


def decode(data: bytes, type_: type[T] | Any) -> T:
    """Decode and validate ``data`` as ``type_`` (a Message class, or a Union of them).

    Raises ``EncodingError`` saying what is wrong for oversized, truncated, mistyped,
    out-of-range or unknown-field input; never another exception.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"a message is bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise EncodingError(
            f"message of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit"
        )
    dec = _DECODERS.get(type_)
    if dec is None:
        dec = _DECODERS[type_] = msgspec.msgpack.Decoder(type_, dec_hook=_dec_hook)
    try:
        return dec.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise EncodingError(f"malformed {getattr(type_, '__name__', 'message')}: {exc}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EncodingError(
            f"malformed {getattr(type_, '__name__', 'message')}: {type(exc).__name__}: {exc}"
        ) from None


def roundtrip(msg: T) -> T:
    """``decode(encode(msg), type(msg))``: what a receiver sees of ``msg``."""
    return decode(encode(msg), type(msg))


def signing_bytes(msg: Any, context: bytes) -> bytes:
    """What a signature over ``msg`` covers: ``context`` and the canonical encoding of every
    field of ``msg`` with ``signature`` emptied (type tag included)."""
    if hasattr(msg, "signature"):
        msg = msgspec.structs.replace(msg, signature=b"")
    return len(context).to_bytes(2, "little") + context + encode(msg)


def signing_digest(msg: Any, context: bytes) -> bytes:
    """SHA-256 of :func:`signing_bytes`: what Ed25519 actually signs.

    Hashing first costs one SHA-256 pass over a (possibly multi-MB) round message instead of
    Ed25519's two SHA-512 passes at every signer and verifier; it covers exactly the same
    bytes.
    """
    if hasattr(msg, "signature"):
        msg = msgspec.structs.replace(msg, signature=b"")
    h = hashlib.sha256(len(context).to_bytes(2, "little") + context)
    h.update(encode(msg))  # no copy of a multi-MB body into one buffer
    return h.digest()


def sign(msg: T, identity: Identity, context: bytes) -> T:
    """``msg`` with its ``signature`` field set by ``identity`` under ``context``."""
    return msgspec.structs.replace(  # type: ignore[type-var]
        msg, signature=identity.sign(context, signing_digest(msg, context))
    )


def verify(msg: Any, public: bytes, context: bytes) -> bool:
    """Whether ``msg.signature`` is ``public``'s signature over :func:`signing_digest`.

    Never raises: anything wrong with ``msg`` (a peer's object) means "not signed".
    """
    sig = getattr(msg, "signature", b"")
    if not isinstance(sig, bytes) or len(sig) != 64 or not isinstance(public, bytes):
        return False
    try:
        digest = signing_digest(msg, context)
    except Exception:  # a peer's object that does not encode is not signed
        return False
    return is_valid(public, context, digest, sig)


def deeply_immutable(obj: Any) -> bool:
    """Whether nothing reachable from ``obj`` can change after it is built: ``obj`` is a
    ``bytes``, ``str``, ``int``, ``float``, ``bool`` or None, a tuple of such, or a frozen
    msgspec Struct whose fields all are (exact types: no subclass, no ``bytearray``, list or
    numpy array — what a peer's decoded message holds, but an in-process object might not).
    """
    t = type(obj)
    if t in _IMMUTABLE_LEAVES:
        return True
    if t is tuple:
        return all(deeply_immutable(x) for x in obj)
    config = getattr(t, "__struct_config__", None)
    if config is None or not config.frozen:
        return False
    return all(deeply_immutable(getattr(obj, f)) for f in t.__struct_fields__)


_IMMUTABLE_LEAVES = (bytes, str, int, float, bool, type(None))


#: Every live DigestMemo of the process (for :func:`forget_unused_digests`).
_MEMOS: weakref.WeakSet[DigestMemo] = weakref.WeakSet()


def forget_unused_digests() -> None:
    """Drop, in every :class:`DigestMemo`, the entries whose object nothing else holds —
    before a party builds new multi-MB objects (a provider sealing), so that the last
    job's dead blobs are freed first, not at the memo's next insertion."""
    for memo in _MEMOS:
        memo.forget_unused()


#: A :class:`DigestMemo` sweeps its dead entries once the entries added since its last sweep
#: outnumber those alive after it and this many, or their payload bytes exceed the live
#: entries' and this many (each sweep is paid for by as many insertions, or bytes hashed).
SWEEP_ENTRIES = 64
SWEEP_BYTES = 32 << 20


def payload_bytes(obj: Any) -> int:
    """Bytes of the ``bytes``/``str`` leaves of ``obj`` reached through tuples and msgspec
    Structs (what a digest of it reads, roughly; 0 for anything else)."""
    t = type(obj)
    if t is bytes or t is str:
        return len(obj)
    if t is tuple:
        return sum(payload_bytes(x) for x in obj)
    fields = getattr(t, "__struct_fields__", None)
    if fields is None:
        return 0
    return sum(payload_bytes(getattr(obj, f)) for f in fields)


class DigestMemo:
    """A digest function memoised by object: what this process computed over one
    immutable object, returned again for the same object (bounded, thread-safe).

    Why: a simulation runs the providers, the coordinator and the aggregators in one
    process and hands them the same objects; each hashes every multi-MB part (or round-1
    message) it checks. Safety: an object that cannot change (``eligible``, e.g. ``bytes``
    or a :func:`deeply_immutable` message) has the digest this process computed over it for
    as long as it lives, so a hit is the value of a pure function — never a digest a peer
    sent (only :meth:`__call__` stores, and only what ``digest`` computed). An entry holds
    its object, so no other object can take its id while the entry lives.

    Bounds: at most ``capacity`` entries (oldest first). Entries whose object nothing else
    references (they can never hit again) are dropped by a sweep, run by
    :meth:`forget_unused` and by an insertion once the entries added since the last sweep
    exceed max(live, :data:`SWEEP_ENTRIES`) or their :func:`payload_bytes` exceed
    max(live bytes, :data:`SWEEP_BYTES`), "live" as the last sweep left them. So a sweep
    (one pass over the entries) is paid for by as many insertions, or by at least 32 MiB
    hashed: amortised O(1) per insertion; and the dead objects the memo keeps alive never
    exceed that many entries or bytes (plus the last object inserted).

    Parameters
    ----------
    digest:
        the function memoised (deterministic).
    eligible:
        which objects may be memoised (the others are hashed each time).
    capacity:
        at most this many entries (precondition: ``capacity >= 1``).
    """

    def __init__(
        self,
        digest: Callable[[Any], bytes | None],
        eligible: Callable[[Any], bool],
        capacity: int = 4096,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"DigestMemo capacity must be >= 1, got {capacity}")
        self._digest = digest
        self._eligible = eligible
        self.capacity = capacity
        #: id → (object, digest, payload bytes), oldest first.
        self._memo: dict[int, tuple[Any, bytes, int]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        #: Entries examined by sweeps so far (the memo's bookkeeping work).
        self.examined = 0
        self._live = self._live_bytes = 0  # after the last sweep
        self._added = self._added_bytes = 0  # since the last sweep
        _MEMOS.add(self)

    def __call__(self, obj: Any) -> Any:
        got = self._memo.get(id(obj))
        if got is not None and got[0] is obj:
            self.hits += 1
            return got[1]
        d = self._digest(obj)
        self.misses += 1
        if d is not None:
            self.remember(obj, d)
        return d

    def remember(self, obj: Any, digest: bytes) -> None:
        """Store ``digest`` for ``obj`` (if eligible): only a value this process computed
        for ``obj`` itself — e.g. a signing digest computed over the same message before its
        signature was set (the digest leaves the signature out)."""
        if not self._eligible(obj):
            return
        size = payload_bytes(obj)
        with self._lock:
            memo = self._memo
            memo[id(obj)] = (obj, digest, size)
            self._added += 1
            self._added_bytes += size
            if self._added > max(self._live, SWEEP_ENTRIES) or self._added_bytes > max(
                self._live_bytes, SWEEP_BYTES
            ):
                self._drop_unused()
            while len(memo) > self.capacity:
                del memo[next(iter(memo))]

    def _drop_unused(self) -> None:
        """Sweep: drop the entries only this memo references (under the lock)."""
        memo = self._memo
        self.examined += len(memo)
        # references to an unused object: its entry's tuple, the loop variable, the call's
        # argument (CPython reference counts)
        dead = [k for k, (o, _, _) in list(memo.items()) if sys.getrefcount(o) <= 3]
        for k in dead:
            del memo[k]
        self._live = len(memo)
        self._live_bytes = sum(e[2] for e in memo.values())
        self._added = self._added_bytes = 0

    def forget_unused(self) -> None:
        """Drop the entries whose object is referenced by nothing else (e.g. a job's end)."""
        with self._lock:
            self._drop_unused()

    def clear(self) -> None:
        with self._lock:
            self._memo.clear()
            self._live = self._live_bytes = self._added = self._added_bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._memo)
