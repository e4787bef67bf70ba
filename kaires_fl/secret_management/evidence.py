"""Ledger evidence a trustee checks on its own: state entries proven against one final block.

A :class:`StateEvidence` is one final block (its header and its certificate of 2f + 1
roster signatures) and a list of state entries, each with its Merkle path to that block's
state root. :meth:`StateEvidence.verify` needs only the genesis block: it checks the
certificate once and every entry's path, and returns the proven entries (None for a proven
absence). One block for all entries makes them a consistent snapshot (e.g. "inputs closed"
and "job committed" hold at the same height). Nothing from the requester is trusted.

It is a schema message (:mod:`kaires_fl.schema`): the block travels as the canonical
encoding of the ledger's :class:`~kaires_fl.ledger.audit.BlockProof` and each value as the
exact canonical bytes the state tree hashes, so decoding validates sizes and types and the
Merkle check runs on the bytes received.

Freshness. :meth:`StateEvidence.verify` with ``max_age_ms`` and ``now_ms`` refuses a block
whose (BFT) time is older than ``now_ms − max_age_ms``: a trustee does not act on a
snapshot taken before, say, a job's receipt or a policy change that happened since.
A :class:`BlockCache` remembers verified certificates (a final block stays final, so its
certificate is checked once per trustee) and the newest block time seen, which bounds
the age of evidence for a trustee without a clock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from kaires_fl import schema
from kaires_fl.errors import AuditError, EncodingError, InvalidProof, KairesError
from kaires_fl.ledger.audit import BlockProof, StateProof
from kaires_fl.ledger.block import Genesis
from kaires_fl.ledger.encoding import canonical, decode_canonical
from kaires_fl.ledger.merkle import verify_state_proof

__all__ = ["BlockCache", "ProvenEntry", "StateEvidence", "prove_entries"]

#: Longest state key an entry may name (characters).
MAX_KEY = 512
#: Most entries one evidence may carry (a batched read of many writes proves each).
MAX_ENTRIES = 2**16
StateKey = Annotated[str, msgspec.Meta(max_length=MAX_KEY)]


class ProvenEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One state entry: its key, its canonical value bytes (None: absent), its Merkle path."""

    key: StateKey
    value: schema.Blob | None
    pairs: Annotated[tuple[tuple[StateKey, schema.Bytes32], ...], msgspec.Meta(max_length=4096)]
    siblings: Annotated[tuple[schema.Bytes32, ...], msgspec.Meta(max_length=64)]


#: Encodes a :class:`ProvenEntry` for its cache key (MessagePack: every field, length-prefixed).
_ENTRY_ENCODER = msgspec.msgpack.Encoder()


class BlockCache:
    """A trustee's memory of verified final blocks (bounded) and of the newest one seen.

    ``blocks`` maps the SHA-256 of a verified block proof's encoding (header and
    certificate) to (state root, height, time_ms): the same bytes need no second check.
    ``entries`` holds the entries whose Merkle path passed, keyed by the state root and the
    SHA-256 of the entry's encoding (key, value, bucket, path): the same entry proven
    against the same root needs no second check — the aggregators' release requests of
    one job prove the same job, inputs and writes. Only passes are kept (bounded, oldest
    first; 64 bytes each).
    """

    def __init__(self, size: int = 256, entries: int = 4096) -> None:
        self.size = size
        self.entries_size = entries
        self.blocks: OrderedDict[bytes, tuple[bytes, int, int]] = OrderedDict()
        self.entries: OrderedDict[tuple[bytes, bytes], None] = OrderedDict()
        self.newest_time_ms = 0
        self.newest_height = 0

    def get(self, header_hash: bytes) -> tuple[bytes, int, int] | None:
        return self.blocks.get(header_hash)

    @staticmethod
    def _entry_key(root: bytes, entry: ProvenEntry) -> tuple[bytes, bytes]:
        return bytes(root), hashlib.sha256(_ENTRY_ENCODER.encode(entry)).digest()

    def entry_passed(self, root: bytes, entry: ProvenEntry) -> bool:
        """Whether ``entry``'s Merkle path to ``root`` passed before (exactly these bytes)."""
        return self._entry_key(root, entry) in self.entries

    def remember_entry(self, root: bytes, entry: ProvenEntry) -> None:
        """Record that ``entry``'s path to ``root`` passed (call only after it passed)."""
        self.entries[self._entry_key(root, entry)] = None
        while len(self.entries) > self.entries_size:
            self.entries.popitem(last=False)

    def put(self, header_hash: bytes, root: bytes, height: int, time_ms: int) -> None:
        self.blocks[header_hash] = (root, height, time_ms)
        while len(self.blocks) > self.size:
            self.blocks.popitem(last=False)
        if height > self.newest_height:
            self.newest_height, self.newest_time_ms = height, max(self.newest_time_ms, time_ms)


class StateEvidence(schema.Message, frozen=True):
    """State entries proven against one final block (see the module docstring).

    ``block`` is the canonical encoding of a :class:`~kaires_fl.ledger.audit.BlockProof`
    (``b"null"``: the genesis state).
    """

    block: schema.Blob
    entries: Annotated[tuple[ProvenEntry, ...], msgspec.Meta(max_length=MAX_ENTRIES)] = ()

    def normalized(self) -> StateEvidence:
        """This evidence; built in process the old way (``StateEvidence(proofs)``, a
        sequence of :class:`StateProof` s in place of ``block``) it is converted with
        :meth:`of` (InvalidProof if that is not possible)."""
        if isinstance(self.block, bytes | bytearray):
            return self
        try:
            proofs = tuple(self.block)
        except TypeError:
            raise InvalidProof("evidence holds neither a block nor state proofs") from None
        if not all(isinstance(p, StateProof) for p in proofs):
            raise InvalidProof("evidence holds something else than state proofs")
        try:
            return StateEvidence.of(proofs)
        except (TypeError, ValueError, AttributeError) as exc:
            raise InvalidProof(f"evidence holds malformed state proofs: {exc!r}") from None

    @classmethod
    def of(cls, proofs: Iterable[StateProof]) -> StateEvidence:
        """Evidence from the ledger's state proofs, which must all be against one block.

        Raises
        ------
        InvalidProof
            if there is no proof or they are against different blocks.
        """
        proofs = tuple(proofs)
        if not proofs:
            raise InvalidProof("no state proofs: evidence proves at least one entry")
        block = proofs[0].block
        if any(p.block != block for p in proofs[1:]):
            raise InvalidProof(
                "the state proofs are against different blocks; prove every entry at one "
                "final block (prove_entries)"
            )
        return cls(
            canonical(block.to_obj()),
            tuple(
                ProvenEntry(
                    p.key,
                    None if p.value is None else canonical(p.value),
                    tuple((k, bytes(v)) for k, v in p.pairs),
                    tuple(bytes(s) for s in p.siblings),
                )
                for p in proofs
            ),
        )

    @property
    def proofs(self) -> tuple[StateProof, ...]:
        """The entries as the ledger's :class:`StateProof` s (decoded; EncodingError)."""
        if not isinstance(self.block, bytes | bytearray):
            return tuple(self.block)
        bp = _block_proof(self.block)
        return tuple(
            StateProof(
                bp,
                e.key,
                None if e.value is None else decode_canonical(e.value),
                e.pairs,
                e.siblings,
            )
            for e in self.entries
        )

    @property
    def height(self) -> int:
        """Height of the evidence's block (0: genesis); 0 if the block does not decode."""
        try:
            return _block_proof(self.normalized().block).height
        except KairesError:
            return 0

    def verify(
        self,
        genesis: Genesis,
        *,
        cache: BlockCache | None = None,
        now_ms: float | None = None,
        max_age_ms: float | None = None,
    ) -> dict[str, Any]:
        """Check everything against ``genesis``; returns ``{key: value or None}``.

        With ``max_age_ms``, the block's time must be at least ``ref − max_age_ms``, where
        ``ref`` is the later of ``now_ms`` and the newest block time ``cache`` has seen.
        ``cache`` saves the certificate check of a block already verified and the Merkle check
        of an entry already verified against the same root, and records the newest block.

        Raises
        ------
        InvalidProof
            if the evidence is empty, stale, or a certificate, chain, Merkle path or value
            is wrong (the message says which); fetch fresh evidence from an honest ledger
            node.
        """
        try:
            ev = self.normalized()
            if not ev.entries:
                raise AuditError("no state proofs")
            key = hashlib.sha256(ev.block).digest()
            got = cache.get(key) if cache is not None else None
            if got is None:
                got = _verified_block(_block_proof(ev.block), genesis)
                if cache is not None:
                    cache.put(key, *got)
            root, height, time_ms = got
            out: dict[str, Any] = {}
            for e in ev.entries:
                if cache is None or not cache.entry_passed(root, e):
                    verify_state_proof(e.key, e.value, e.pairs, e.siblings, root)
                    if cache is not None:
                        cache.remember_entry(root, e)
                out[e.key] = None if e.value is None else decode_canonical(e.value)
        except (
            AuditError,
            EncodingError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            OverflowError,
            RecursionError,
        ) as exc:
            raise InvalidProof(
                f"ledger evidence does not verify from the genesis block: {exc}; fetch fresh "
                "evidence from an honest ledger node"
            ) from exc
        if max_age_ms is not None:
            refs = [r for r in (now_ms, cache.newest_time_ms if cache else None) if r]
            ref = max(refs) if refs else None
            if ref is not None and time_ms < ref - max_age_ms:
                raise InvalidProof(
                    f"stale ledger evidence: its block (height {height}) is "
                    f"{(ref - time_ms) / 1000:.1f} s old, more than the {max_age_ms / 1000:.1f} s "
                    "allowed (a policy change, revocation or receipt may have come since); "
                    "prove the entries again at the latest final block"
                )
        return out

    def to_bytes(self) -> bytes:
        return schema.encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> StateEvidence:
        """Decode and validate (EncodingError on anything malformed)."""
        return schema.decode(data, cls)


def _block_proof(raw: bytes) -> BlockProof:
    try:
        return BlockProof.from_obj(decode_canonical(raw))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise EncodingError(f"malformed block proof in ledger evidence: {exc!r}") from None


def _verified_block(bp: BlockProof, genesis: Genesis) -> tuple[bytes, int, int]:
    """(state root, height, time_ms) of a final block, its certificate checked."""
    hd = bp.header
    if hd is None:
        return bp.verify(genesis), 0, int(genesis.time_ms)
    if not isinstance(hd.height, int) or not isinstance(hd.time_ms, int):
        raise EncodingError("block header height and time must be integers")
    return bp.verify(genesis), hd.height, hd.time_ms


def prove_entries(client: Any, keys: Iterable[str], attempts: int = 5) -> StateEvidence:
    """Evidence for ``keys`` at the latest final block, from a ``LedgerClient``.

    Uses the client's ``prove_many`` when it has one (one block read for all keys);
    retries if a block became final between two proofs (so all share one block).
    """
    keys = list(dict.fromkeys(keys))
    prove_many = getattr(client, "prove_many", None)
    for _ in range(attempts):
        # prove_many reads (and decodes) the final block once for all keys.
        proofs = tuple(prove_many(keys)) if prove_many else tuple(client.prove(k) for k in keys)
        if len({p.block for p in proofs}) <= 1:
            return StateEvidence.of(proofs)
    raise InvalidProof("the ledger kept moving while proving; retry the release request")
