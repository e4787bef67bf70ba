"""Signed ledger transactions.

A :class:`Tx` names a contract ``kind``, carries a JSON ``payload``, the public keys
of its ``signers`` (hex; the first one is the *sender*) and the sender's ``counter``
(must be exactly one more than the sender's last committed counter: replays and
reorderings are rejected). Every signer signs the transaction hash under the
context :data:`TX_CONTEXT`; the hash covers the chain id, so a transaction cannot be
replayed on another ledger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any

import msgspec

from kaires_fl.crypto.sign import H, Identity, verify
from kaires_fl.errors import EncodingError, InvalidProof, LedgerError
from kaires_fl.ledger.encoding import (
    canonical,
    expect_fields,
    expect_int,
    expect_list,
    expect_str,
    hex_bytes,
    json_depth_exceeds,
)

TX_CONTEXT = b"kaires/ledger/tx"
#: Most signers one transaction may have.
MAX_SIGNERS = 256
#: Largest canonical body (everything but the signatures) of a transaction, in bytes.
MAX_TX_BYTES = 1 << 20
#: Deepest nesting of a transaction body (its payload is one level less): a block record
#: holding it stays within ``encoding.MAX_DEPTH``.
MAX_TX_DEPTH = 40

_Key = Annotated[str, msgspec.Meta(max_length=128)]


@dataclass(frozen=True)
class Tx:
    """A signed transaction (see module docstring)."""

    # The annotations are the wire schema of a transaction (TxGossip carries Tx values):
    # msgspec validates them on decode. The payload is checked by :meth:`check_bounds`.
    chain: Annotated[str, msgspec.Meta(max_length=128)]
    kind: Annotated[str, msgspec.Meta(max_length=256)]
    payload: Any
    signers: Annotated[tuple[_Key, ...], msgspec.Meta(max_length=MAX_SIGNERS)]
    counter: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    signatures: Annotated[tuple[_Key, ...], msgspec.Meta(max_length=MAX_SIGNERS)]

    def body(self) -> bytes:
        """The canonical encoding of everything but the signatures (what is signed)."""
        return self._body

    @cached_property
    def _body(self) -> bytes:
        return canonical(
            {
                "chain": self.chain,
                "counter": self.counter,
                "kind": self.kind,
                "payload": self.payload,
                "signers": list(self.signers),
            }
        )

    @cached_property
    def hash(self) -> bytes:
        """32-byte transaction id (covers everything but the signatures)."""
        return H(b"kaires/ledger/tx-id", self.body())

    @cached_property
    def id(self) -> str:
        return self.hash.hex()

    @cached_property
    def bounds_error(self) -> str | None:
        """Why this transaction is not a ledger value within bounds, or None.

        Checks the field types (a Tx may come from a peer), that the payload is a JSON
        ledger value, the body size (:data:`MAX_TX_BYTES`) and depth
        (:data:`MAX_TX_DEPTH`), so any block holding it decodes on every node.
        """
        if not (
            type(self.chain) is str
            and type(self.kind) is str
            and type(self.counter) is int
            and isinstance(self.signers, tuple)
            and isinstance(self.signatures, tuple)
            and all(type(k) is str for k in self.signers + self.signatures)
        ):
            return "a transaction field has the wrong type"
        try:
            body = self.body()
        except EncodingError as exc:
            return str(exc)
        if len(body) > MAX_TX_BYTES:
            return f"the transaction body is {len(body)} bytes, more than {MAX_TX_BYTES}"
        if json_depth_exceeds(body, MAX_TX_DEPTH):
            return f"the transaction payload nests deeper than {MAX_TX_DEPTH - 1} levels"
        return None

    def check_bounds(self) -> None:
        """Raises LedgerError with :attr:`bounds_error` if there is one."""
        err = self.bounds_error
        if err is not None:
            raise LedgerError(f"malformed transaction: {err}")

    @property
    def sender(self) -> str:
        return self.signers[0]

    def verify_signatures(self) -> None:
        """Check every signer's signature.

        Raises
        ------
        LedgerError
            if the transaction is unsigned, malformed or a signature does not verify.
        """
        if not self.signers:
            raise LedgerError(f"tx {self.id[:16]}… has no signer: sign it with make_tx")
        if len(self.signatures) != len(self.signers):
            raise LedgerError(
                f"tx {self.id[:16]}… has {len(self.signers)} signers but "
                f"{len(self.signatures)} signatures: every signer must sign"
            )
        if len(set(self.signers)) != len(self.signers):
            raise LedgerError(f"tx {self.id[:16]}… lists a signer twice")
        h = self.hash
        for pub, sig in zip(self.signers, self.signatures, strict=True):
            try:
                verify(
                    hex_bytes(pub, 32, "signer key"), TX_CONTEXT, h, hex_bytes(sig, 64, "signature")
                )
            except (InvalidProof, EncodingError) as exc:
                raise LedgerError(
                    f"tx {self.id[:16]}…: signature of {pub[:16]}… is invalid ({exc}); the tx "
                    "was altered or signed with another key"
                ) from exc

    def to_obj(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "counter": self.counter,
            "kind": self.kind,
            "payload": self.payload,
            "signatures": list(self.signatures),
            "signers": list(self.signers),
        }

    @classmethod
    def from_obj(cls, obj: Any) -> Tx:
        """A transaction from its decoded record (e.g. from a peer).

        Raises
        ------
        EncodingError
            if a field is missing, extra, of the wrong type or out of range.
        """
        o = expect_fields(obj, "transaction record", _TX_FIELDS)
        chain, kind, counter = o["chain"], o["kind"], o["counter"]
        signers, signatures = o["signers"], o["signatures"]
        # One combined check (this runs for every tx of every decoded block); the
        # expect_* helpers name the culprit when it fails.
        if not (
            type(chain) is str
            and len(chain) <= 128
            and type(kind) is str
            and len(kind) <= 256
            and type(counter) is int
            and 0 <= counter < 2**63
            and type(signers) is list
            and type(signatures) is list
            and len(signers) <= MAX_SIGNERS
            and len(signatures) <= MAX_SIGNERS
            and all(type(k) is str and len(k) <= 128 for k in signers + signatures)
        ):
            expect_str(chain, "tx chain", 128)
            expect_str(kind, "tx kind", 256)
            expect_int(counter, "tx counter")
            for k in expect_list(signers, "tx signers", MAX_SIGNERS):
                expect_str(k, "tx signer", 128)
            for k in expect_list(signatures, "tx signatures", MAX_SIGNERS):
                expect_str(k, "tx signature", 128)
        return cls(chain, kind, o["payload"], tuple(signers), counter, tuple(signatures))


_TX_FIELDS = frozenset({"chain", "counter", "kind", "payload", "signatures", "signers"})


def make_tx(
    chain: str,
    kind: str,
    payload: Any,
    counter: int,
    signer: Identity,
    cosigners: Sequence[Identity] = (),
) -> Tx:
    """Build and sign a transaction.

    Parameters
    ----------
    chain:
        The ledger's chain id (``genesis.chain_id``).
    counter:
        The sender's next counter (last committed + 1; see ``LedgerClient.next_counter``).
    cosigners:
        Further identities that must sign (e.g. to meet a threshold rule).
    """
    ids = (signer, *cosigners)
    unsigned = Tx(chain, kind, payload, tuple(i.public.hex() for i in ids), counter, ())
    h = unsigned.hash
    sigs = tuple(i.sign(TX_CONTEXT, h).hex() for i in ids)
    return Tx(chain, kind, payload, unsigned.signers, counter, sigs)
