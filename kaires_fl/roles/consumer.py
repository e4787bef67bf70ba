"""The data consumer: asks for a job on the ledger and opens the aggregate it is sealed.

The consumer signs the ``job.create`` transaction (statistic, providers, the id of a
registered aggregation committee, its own X25519 key; the ledger fills the committee's
keys, degree and receipt quorum from its registry, checks every provider's policy — it
must name that committee — and escrows the prices) and the ``calypso.inputs``
transaction that closes the submission set. It receives the aggregators' shares of the
aggregate sealed to its key *only after* the receipt is committed, checks each against the
receipt, and reconstructs robustly: up to t crashed or Byzantine aggregators change
nothing (protocol.md §7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kaires_fl.aggregation.aggregator import sealed_share_hash, share_aad
from kaires_fl.aggregation.job import flp_for
from kaires_fl.aggregation.submission import SealedSubmission
from kaires_fl.arith import sharing
from kaires_fl.crypto.envelope import EnvelopeKeyPair, open_sealed
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import AccessDenied, EncodingError, InvalidProof, ProtocolError
from kaires_fl.ledger.jobs import job_payload


@dataclass
class Consumer:
    """A data consumer: Ed25519 identity (ledger) and X25519 key pair (receives results)."""

    name: str
    identity: Identity
    keypair: EnvelopeKeyPair = field(default_factory=EnvelopeKeyPair.generate)

    @property
    def public(self) -> str:
        return self.identity.public.hex()

    def job_payload(
        self,
        statistic: Any,
        providers: Sequence[str],
        committee: str,
        min_providers: int = 1,
        coordinator: str | None = None,
    ) -> dict[str, Any]:
        """``job.create`` payload for the providers' policy ids and a registered committee id.

        The consumer chooses neither the aggregators nor the degree nor the receipt quorum:
        the ledger fills them from the committee registry (2t + 1 receipt signatures).
        ``coordinator``: the Ed25519 key (hex) of the job's coordinator, the only one the
        aggregators take the job's messages from (default: the consumer's own key).
        """
        kind, params = statistic.spec()
        return job_payload(
            kind,
            list(providers),
            committee,
            self.keypair.public.hex(),
            params={"statistic": params, "min_providers": min_providers},
            min_providers=min_providers,
            coordinator=coordinator,
        )

    @staticmethod
    def inputs_payload(job_id: str, submissions: Sequence[SealedSubmission]) -> dict[str, Any]:
        """``calypso.inputs`` payload fixing the submission set."""
        return {
            "job": job_id,
            "manifests": [s.manifest.hash.hex() for s in submissions],
            "writes": [s.manifest.write for s in submissions],
        }

    def open_result(
        self,
        job: Mapping[str, Any],
        receipt: Mapping[str, Any] | None,
        shares: Mapping[int, bytes],
        statistic: Any,
    ) -> tuple[np.ndarray, list[int]]:
        """The aggregate (field elements) and the aggregators whose shares were wrong.

        Pre: ``receipt`` is the committed receipt entry of ``job``. Shares whose hash the
        receipt does not name, that do not open or decode count as missing (their
        aggregator is named). Raises ``AccessDenied`` when there is no committed ``done``
        receipt (nothing may be opened before it) and ``ProtocolError`` when too few good
        shares remain.
        """
        if receipt is None:
            raise AccessDenied(
                f"job {job['id'][:16]}… has no committed receipt: the result is only released "
                "after the receipt is on the ledger"
            )
        r = receipt["receipt"]
        if r["status"] != "done":
            raise AccessDenied(f"job {job['id'][:16]}… failed: {r.get('why') or r['status']}")
        F = flp_for(statistic).field
        named = r.get("shares", {})
        aggs = job["aggregators"]
        n, t = len(aggs), int(job["params"]["degree"])
        opened: dict[int, np.ndarray | None] = {}
        bad: list[int] = []
        for i, blob in shares.items():
            if named.get(aggs[i]) != sealed_share_hash(blob):
                bad.append(i)
                continue
            try:
                plain = open_sealed(self.keypair, blob, share_aad(job["id"], i))
                opened[i] = F.decode(plain, (statistic.output_len,))
            except (InvalidProof, EncodingError):
                bad.append(i)
        try:
            agg, wrong = sharing.robust_reconstruct(F, opened, n, t)
        except ProtocolError as exc:
            raise ProtocolError(
                f"the aggregate of job {job['id'][:16]}… cannot be reconstructed: {exc}"
            ) from exc
        return agg, sorted(set(bad) | set(wrong))
