"""The wire format between processes: one registry of messages, one frame.

Every :class:`kaires_fl.schema.Message` a service may send to another process is listed
here, by the modules that define them (:data:`WIRE_MODULES`): :func:`registry` imports
them and collects every ``schema.Message`` subclass they define. Tags (the class name, or
an explicit ``tag=``) must be unique across the registry: a frame's body is decoded as
the tagged union of all of them, so two messages with one tag could be confused.
``tests/transport/test_wire_registry.py`` fails if two types share a tag or if a module
of the package defines a message that a module of :data:`WIRE_MODULES` does not.

A :class:`Frame` carries ``(src address, dst address, body)``; :func:`encode_frame` and
:func:`decode_frame` are its canonical encoding (MessagePack, :mod:`kaires_fl.schema`)
and validation; :func:`encode_body` + :func:`frame_from_body` give the same bytes with
the message encoded once for all destinations of a broadcast. Decoding raises
:class:`~kaires_fl.errors.EncodingError` — never another exception — for any input:
oversized (> :data:`MAX_FRAME_BYTES`), truncated, unknown tags, wrong types or ranges.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from typing import Any, Union

import msgspec

from kaires_fl import schema
from kaires_fl.errors import EncodingError

#: Modules defining the messages that cross processes (ledger consensus, trustee
#: committee: DKG, release, coin, dispute, reshare; aggregation rounds and services;
#: submissions; differential-privacy noise deals; the node host's own messages). Add a
#: module here when it defines a new :class:`schema.Message`.
WIRE_MODULES: tuple[str, ...] = (
    "kaires_fl.ledger.block",
    "kaires_fl.ledger.consensus",
    "kaires_fl.secret_management.dkg",
    "kaires_fl.secret_management.coin",
    "kaires_fl.secret_management.release",
    "kaires_fl.secret_management.evidence",
    "kaires_fl.secret_management.trustee",
    "kaires_fl.secret_management.dispute",
    "kaires_fl.secret_management.reshare",
    "kaires_fl.secret_management.broadcast",
    "kaires_fl.aggregation.submission",
    "kaires_fl.aggregation.aggregator",
    "kaires_fl.aggregation.job",
    "kaires_fl.privacy.mechanism",
    "kaires_fl.node.host",
)

#: Largest frame (encoded bytes): the schema's message limit.
MAX_FRAME_BYTES = schema.MAX_MESSAGE_BYTES


def tag_of(cls: type) -> str:
    """The wire tag of message class ``cls`` (its ``tag=`` or its class name)."""
    tag = msgspec.inspect.type_info(cls).tag  # type: ignore[attr-defined]
    return str(tag)


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    stack: list[type] = list(cls.__subclasses__())
    while stack:
        c = stack.pop()
        out.append(c)
        stack.extend(c.__subclasses__())
    return out


def collect(modules: tuple[str, ...] = WIRE_MODULES) -> dict[str, type]:
    """Import ``modules`` and return ``{tag: class}`` of the Message subclasses they define.

    Raises
    ------
    EncodingError
        if two classes share a tag (give one an explicit ``tag=`` in its class statement).
    """
    for m in modules:
        importlib.import_module(m)
    wanted = set(modules)
    out: dict[str, type] = {}
    for cls in sorted(_subclasses(schema.Message), key=lambda c: (c.__module__, c.__name__)):
        if cls.__module__ not in wanted:
            continue
        tag = tag_of(cls)
        prev = out.get(tag)
        if prev is not None and prev is not cls:
            raise EncodingError(
                f"wire tag {tag!r} is used by {prev.__module__}.{prev.__qualname__} and "
                f"{cls.__module__}.{cls.__qualname__}: give one an explicit tag= so a frame "
                "cannot be decoded as the other"
            )
        out[tag] = cls
    return out


@lru_cache(maxsize=1)
def registry() -> dict[str, type]:
    """``{tag: message class}`` of every message that crosses processes (cached)."""
    return collect()


@lru_cache(maxsize=1)
def body_type() -> Any:
    """The tagged union of every registered message (what a frame's body decodes as)."""
    types = tuple(registry().values())
    return Union[types]  # noqa: UP007 - a runtime union of a variable tuple


@lru_cache(maxsize=1)
def frame_type() -> type:
    """The :class:`Frame` struct type, built once the registry is known."""
    return msgspec.defstruct(
        "Frame",
        [("src", schema.Label), ("dst", schema.Label), ("body", body_type())],
        frozen=True,
        forbid_unknown_fields=True,
        array_like=True,
        module=__name__,
    )


def Frame(src: str, dst: str, body: Any) -> Any:
    """A frame ``src`` → ``dst`` carrying message ``body`` (an instance of :func:`frame_type`)."""
    return frame_type()(src, dst, body)


def encode_body(body: Any) -> bytes:
    """The canonical encoding of message ``body`` (once, for every destination of a
    broadcast: see :func:`frame_from_body`).

    Raises
    ------
    EncodingError
        if ``body`` is not a registered message, a field does not encode, or it exceeds
        :data:`MAX_FRAME_BYTES`.
    """
    if type(body) not in _registered():
        raise EncodingError(
            f"{type(body).__name__} is not a registered wire message; add its module to "
            "kaires_fl.wire.WIRE_MODULES"
        )
    try:
        data = schema.encode(body)
    except (TypeError, ValueError, OverflowError, NotImplementedError) as exc:
        raise EncodingError(f"{type(body).__name__} does not encode to the wire: {exc}") from exc
    if len(data) > MAX_FRAME_BYTES:
        raise EncodingError(
            f"message of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit; "
            "split the message"
        )
    return data


def frame_from_body(src: str, dst: str, body: bytes) -> bytes:
    """The wire bytes of a frame whose message is already encoded (:func:`encode_body`):
    byte for byte what :func:`encode_frame` gives (a MessagePack array ``[src, dst, body]``).

    Raises
    ------
    EncodingError
        if an address is not a string of at most 256 characters or the frame exceeds
        :data:`MAX_FRAME_BYTES`.
    """
    if not isinstance(src, str) or not isinstance(dst, str) or len(src) > 256 or len(dst) > 256:
        raise EncodingError("frame addresses are strings of at most 256 characters")
    data = b"".join((b"\x93", schema.encode(src), schema.encode(dst), body))
    if len(data) > MAX_FRAME_BYTES:
        raise EncodingError(
            f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit; split the "
            "message"
        )
    return data


def encode_frame(src: str, dst: str, body: Any) -> bytes:
    """The wire bytes of a frame.

    Raises
    ------
    EncodingError
        if ``body`` is not a registered message, an address is longer than 256 characters,
        a field does not encode, or the frame exceeds :data:`MAX_FRAME_BYTES`.
    """
    return frame_from_body(src, dst, encode_body(body))


def decode_frame(data: bytes | bytearray | memoryview) -> tuple[str, str, Any]:
    """``(src, dst, body)`` of a frame's wire bytes, validated.

    Raises
    ------
    EncodingError
        for anything that is not a well-formed frame of a registered message.
    """
    if isinstance(data, bytes | bytearray | memoryview) and len(data) > MAX_FRAME_BYTES:
        raise EncodingError(f"frame of {len(data)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        f: Any = schema.decode(bytes(data) if not isinstance(data, bytes) else data, frame_type())
    except EncodingError:
        raise
    except Exception as exc:  # a validator's own exception: still a malformed frame
        raise EncodingError(f"malformed frame: {type(exc).__name__}: {exc}") from None
    return f.src, f.dst, f.body


@lru_cache(maxsize=1)
def _registered() -> frozenset[type]:
    return frozenset(registry().values())
