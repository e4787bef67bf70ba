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
from typing import Any

from kaires_fl.crypto.sign import H, Identity, verify
from kaires_fl.errors import EncodingError, InvalidProof, LedgerError
from kaires_fl.ledger.encoding import (
    canonical,
    expect_fields,
    expect_int,
    expect_list,
    expect_str,
    hex_bytes,
)

TX_CONTEXT = b"kaires/ledger/tx"


@dataclass(frozen=True)
class Tx:
    """A signed transaction (see module docstring)."""

    chain: str
    kind: str
    payload: Any
    signers: tuple[str, ...]
    counter: int
    signatures: tuple[str, ...]

    def body(self) -> bytes:
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
        signers = expect_list(o["signers"], "tx signers", MAX_SIGNERS)
        signatures = expect_list(o["signatures"], "tx signatures", MAX_SIGNERS)
        return cls(
            chain=expect_str(o["chain"], "tx chain", 128),
            kind=expect_str(o["kind"], "tx kind", 256),
            payload=o["payload"],
            signers=tuple(expect_str(k, "tx signer", 128) for k in signers),
            counter=expect_int(o["counter"], "tx counter"),
            signatures=tuple(expect_str(k, "tx signature", 256) for k in signatures),
        )


_TX_FIELDS = frozenset({"chain", "counter", "kind", "payload", "signatures", "signers"})
#: Most signers one transaction may have.
MAX_SIGNERS = 256


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
