"""Ledger evidence a trustee checks on its own: state entries proven against one final block.

A :class:`StateEvidence` is a set of the ledger's
:class:`~kaires_fl.ledger.audit.StateProof` s that all hang off the same final block.
:meth:`StateEvidence.verify` needs only the genesis block: it checks that block's
certificate (2f + 1 roster signatures) once and every entry's Merkle path to its state
root, and returns the proven entries (None for a proven absence). Requiring one block
makes the entries a consistent snapshot (e.g. "inputs closed" and "job committed" hold
at the same height). Nothing from the requester is trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kaires_fl.errors import AuditError, EncodingError, InvalidProof
from kaires_fl.ledger.audit import StateProof
from kaires_fl.ledger.block import Genesis
from kaires_fl.ledger.encoding import canonical
from kaires_fl.ledger.merkle import verify_state_proof

__all__ = ["StateEvidence", "prove_entries"]


@dataclass(frozen=True)
class StateEvidence:
    """State proofs of several keys, all against one final block."""

    proofs: tuple[StateProof, ...]

    @property
    def height(self) -> int:
        return self.proofs[0].height if self.proofs else 0

    def verify(self, genesis: Genesis) -> dict[str, Any]:
        """Check everything against ``genesis``; returns ``{key: value or None}``.

        Raises
        ------
        InvalidProof
            if the evidence is empty, mixes blocks, or a certificate, chain, Merkle path
            or value is wrong (the message says which); fetch fresh evidence from an
            honest ledger node.
        """
        try:
            if not self.proofs:
                raise AuditError("no state proofs")
            block = self.proofs[0].block
            root = block.verify(genesis)
            out: dict[str, Any] = {}
            for p in self.proofs:
                if p.block != block:
                    raise AuditError("the state proofs are against different blocks")
                raw = None if p.value is None else canonical(p.value)
                verify_state_proof(p.key, raw, p.pairs, p.siblings, root)
                out[p.key] = p.value
        except (AuditError, EncodingError, ValueError, TypeError) as exc:
            raise InvalidProof(
                f"ledger evidence at height {self.height} does not verify from the genesis "
                f"block: {exc}; fetch fresh evidence from an honest ledger node"
            ) from exc
        return out

    def to_bytes(self) -> bytes:
        return canonical([p.to_bytes().decode("ascii") for p in self.proofs])


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
            return StateEvidence(proofs)
    raise InvalidProof("the ledger kept moving while proving; retry the release request")
