"""The data provider: its data policy on the ledger, and its sealed submission to a job.

A provider owns one DARC-like data policy (id :attr:`Provider.policy_id`) whose ``use`` rule
names the consumers it grants and whose terms fix the statistics, max jobs, expiry, min
providers and price (protocol.md §0.4). For a committed job that includes it, it encodes
its rows with the job's statistic, CALYPSO-writes one fresh key per aggregator (one
``calypso.write`` transaction) and seals its Shamir shares under those keys
(:mod:`kaires_fl.aggregation.submission`). Its data never leaves it otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kaires_fl.aggregation.job import circuit_id, flp_for
from kaires_fl.aggregation.submission import (
    PROVIDER_FAULTS,
    SealedSubmission,
    seal_parts,
    sign_manifest,
)
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.sign import Identity
from kaires_fl.errors import ConfigError
from kaires_fl.ledger.darc import (
    DEFAULT_MAX_JOBS,
    DEFAULT_MIN_PROVIDERS,
    bound_policy_id,
    darc_key,
    data_terms,
)
from kaires_fl.ledger.tx import Tx
from kaires_fl.secret_management.contracts import lts_key
from kaires_fl.secret_management.write import WRITE_KIND, aggregator_slot, make_write

NOBODY = "ed25519:" + "0" * 64


def policy_id_for(label: Any, owner: str) -> str:
    """The ledger id of provider ``label``'s data policy, bound to its ``owner`` key (hex):
    nobody else can create it, so a predictable label cannot be squatted."""
    text = re.sub(r"[^A-Za-z0-9_.:/-]", "_", str(label))
    return bound_policy_id(f"provider.{text}", owner)


def use_rule(consumers: Sequence[str]) -> str:
    """A ``use`` rule granting the consumers (hex Ed25519 keys); nobody if empty."""
    return "|".join(f"ed25519:{c}" for c in consumers) or NOBODY


@dataclass
class Provider:
    """A data provider: ``label`` (the user's name for it), its identity, an optional fault."""

    label: str
    identity: Identity
    fault: str | None = None

    def __post_init__(self) -> None:
        if self.fault is not None and self.fault not in PROVIDER_FAULTS:
            raise ConfigError(
                f"unknown provider fault {self.fault!r}; use one of {PROVIDER_FAULTS}"
            )

    @property
    def policy_id(self) -> str:
        return policy_id_for(self.label, self.public)

    @property
    def public(self) -> str:
        return self.identity.public.hex()

    def policy_payload(
        self,
        consumers: Sequence[str],
        *,
        price: int = 0,
        min_providers: int = DEFAULT_MIN_PROVIDERS,
        statistics: Sequence[str] = ("*",),
        max_jobs: int | None = DEFAULT_MAX_JOBS,
        version: int | None = None,
        committees: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Payload of ``darc.create`` (``version`` None) or ``darc.evolve`` (a revocation or
        a change of grants/terms is just a new version). ``committees``: the ids of the
        registered aggregation committees this provider accepts for its jobs."""
        p: dict[str, Any] = {
            "id": self.policy_id,
            "rules": {"_evolve": f"ed25519:{self.public}", "use": use_rule(consumers)},
            "terms": data_terms(
                self.public,
                statistics=statistics,
                max_jobs=max_jobs,
                min_providers=min_providers,
                price=price,
                committees=committees,
            ),
        }
        if version is not None:
            p["version"] = version
        return p

    @staticmethod
    def measure(statistic: Any, X: Any, y: Any) -> np.ndarray:
        """The provider's rows encoded for ``statistic``: ``(B, MEAS_LEN)`` field elements.

        Raises ``ConfigError`` if the rows exceed the statistic's declared bounds (done
        before any job is committed, so nothing is escrowed for data that cannot be sent).
        """
        return np.asarray(statistic.measurements(X, y))

    def submit(
        self, ledger: Any, job: Mapping[str, Any], statistic: Any, meas: np.ndarray, lts_id: str
    ) -> tuple[Tx, SealedSubmission]:
        """Sealed submission of the encoded rows ``meas`` for committed ``job`` (§2).

        Returns the signed ``calypso.write`` transaction (to be committed before the inputs
        close) and the submission (for the coordinator).
        """
        lts = ledger.get(lts_key(lts_id))
        policy = ledger.get(darc_key(self.policy_id))
        return seal_submission(
            self.identity,
            self.policy_id,
            job,
            flp_for(statistic),
            meas,
            lts_id=lts_id,
            lts_X=lts["X"],
            policy_version=int(policy["version"]),
            sign_write=lambda kind, payload: ledger.sign(self.identity, kind, payload),
            fault=self.fault,
        )


def seal_submission(
    identity: Identity,
    policy_id: str,
    job: Mapping[str, Any],
    flp: Any,
    meas: np.ndarray,
    *,
    lts_id: str,
    lts_X: str,
    policy_version: int,
    sign_write: Callable[[str, Any], Tx],
    fault: str | None = None,
) -> tuple[Tx, SealedSubmission]:
    """The CALYPSO write and the sealed submission of ``meas`` for committed ``job`` (§2).

    One fresh key per aggregator is written to the trustees' key ``lts_X`` (hex) under the
    provider's policy version; the Shamir-shared rows and proof are sealed under those keys
    and the manifest is signed. ``sign_write(kind, payload)`` signs the write transaction
    (through a ledger client online, or with a known counter offline, as a Flower client).
    """
    n = len(job["aggregators"])
    t = int(job["params"]["degree"])
    X_point = Point.from_bytes(bytes.fromhex(lts_X), allow_identity=False)
    slots = [aggregator_slot(i) for i in range(n)]
    entry, plain = make_write(X_point, lts_id, policy_id, policy_version, job["id"], slots)
    tx = sign_write(WRITE_KIND, entry.to_payload())
    cid = circuit_id(job["statistic"], job["params"]["statistic"])
    parts = seal_parts(
        flp,
        meas,
        job=job["id"],
        provider=policy_id,
        circuit=cid,
        n=n,
        t=t,
        keys=[plain[s] for s in slots],
        fault=fault,
    )
    sub = sign_manifest(
        identity, parts, job=job["id"], provider=policy_id, circuit=cid, write=tx.id
    )
    return tx, sub
