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

from kaires_fl import schema
from kaires_fl.aggregation.job import circuit_id, flp_for
from kaires_fl.aggregation.submission import (
    PROVIDER_FAULTS,
    SealedSubmission,
    max_batch,
    seal_parts,
    sign_manifest,
)
from kaires_fl.crypto.group import Point
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import AccessDenied, ConfigError
from kaires_fl.ledger.committees import committee_key
from kaires_fl.ledger.darc import (
    DEFAULT_MAX_JOBS,
    DEFAULT_MIN_PROVIDERS,
    bound_policy_id,
    darc_key,
    data_terms,
)
from kaires_fl.ledger.jobs import job_key
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
        privacy_budget: tuple[float, float] | None = None,
    ) -> dict[str, Any]:
        """Payload of ``darc.create`` (``version`` None) or ``darc.evolve`` (a revocation or
        a change of grants/terms is just a new version). ``committees``: the ids of the
        registered aggregation committees this provider accepts for its jobs;
        ``privacy_budget``: the (ε, δ) all its jobs together may spend (None: no budget)."""
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
                privacy_budget=privacy_budget,
            ),
        }
        if version is not None:
            p["version"] = version
        return p

    @staticmethod
    def measure(statistic: Any, X: Any, y: Any, sample_weight: Any = None) -> np.ndarray:
        """The provider's rows encoded for ``statistic``: ``(B, MEAS_LEN)`` field elements
        (``sample_weight``: the rows' weights, for a weighted statistic).

        Raises ``ConfigError`` if the rows exceed the statistic's declared bounds (done
        before any job is committed, so nothing is escrowed for data that cannot be sent).
        """
        if sample_weight is None:
            return np.asarray(statistic.measurements(X, y))
        return np.asarray(statistic.measurements(X, y, sample_weight=sample_weight))

    def submit(
        self, ledger: Any, job: Mapping[str, Any], statistic: Any, meas: np.ndarray, lts_id: str
    ) -> tuple[Tx, SealedSubmission]:
        """Sealed submission of the encoded rows ``meas`` for committed ``job`` (§2).

        Pre: ``job`` is the committed job entry, as on the ledger (re-read and compared: a
        relayed copy cannot change it), it includes this provider, its committee is one
        this provider's policy accepts and the job's
        aggregators, keys and degree are that registered committee's
        (:func:`check_job_committee`); ``meas`` holds 1..``max_batch(statistic, job)`` rows.
        Returns the signed ``calypso.write`` transaction (to be committed before the inputs
        close) and the submission (for the coordinator).

        Raises
        ------
        AccessDenied
            if the job is not the committed one or does not include this provider, if it
            names a committee the policy does not accept, or one whose
            registered members, keys or degree differ from the job's (nothing is written).
        ConfigError
            if ``meas`` is an empty batch or larger than the job admits.
        """
        committed = ledger.get(job_key(str(job.get("id"))))
        if committed is None or committed != job or committed.get("status") != "committed":
            raise AccessDenied(
                f"provider {self.label}: job {str(job.get('id'))[:16]}… is not a committed job "
                "on the ledger, or differs from it: nothing sent (a relay altered it?)"
            )
        if self.policy_id not in committed["providers"]:
            raise AccessDenied(f"provider {self.label} is not included in the job: nothing sent")
        job = committed
        policy = ledger.get(darc_key(self.policy_id))
        cid = job.get("committee")
        committee = ledger.get(committee_key(cid)) if isinstance(cid, str) else None
        check_job_committee(job, policy, committee)
        cap = max_batch(statistic, job)
        if not 1 <= len(meas) <= cap:
            raise ConfigError(
                f"provider {self.label}: {len(meas)} measurements for a job that admits "
                f"1..{cap} per provider (provider granularity: exactly one); nothing sent"
            )
        lts = ledger.get(lts_key(lts_id))
        return seal_submission(
            self.identity,
            self.policy_id,
            job,
            flp_for(statistic),
            meas,
            lts_id=lts_id,
            lts_X=lts["X"],
            policy_version=int(policy["version"]),
            committee=committee,
            sign_write=lambda kind, payload: ledger.sign(self.identity, kind, payload),
            fault=self.fault,
        )


def check_job_committee(
    job: Mapping[str, Any], policy: Mapping[str, Any] | None, committee: Mapping[str, Any] | None
) -> tuple[int, int]:
    """Check, before sealing, that committed ``job`` uses a committee ``policy`` accepts.

    Pre: ``policy`` is this provider's own data policy entry and ``committee`` the ledger's
    entry ``committee/<job["committee"]>`` (None if absent).
    Post: returns ``(n, t)`` of the REGISTERED committee — the number of shares and the
    Shamir degree the provider deals — after checking that the job names exactly its
    members (Ed25519 keys, in order), their X25519 keys and its degree, and that
    n ≥ 3t + 1. A consumer therefore cannot make a provider deal shares to keys, a number
    of aggregators or a degree of its choosing.

    Raises
    ------
    AccessDenied
        if the policy has no terms, the job names no committee or one the policy does not
        list in ``terms["committees"]``, the committee is not registered, or the job's
        aggregators, keys or degree are not the registered committee's.
    """
    terms = (policy or {}).get("terms") or {}
    accepted = terms.get("committees") or ()
    cid = job.get("committee")
    short = f"{cid[:16]}…" if isinstance(cid, str) else repr(cid)
    if not isinstance(cid, str) or cid not in accepted:
        raise AccessDenied(
            f"job {str(job.get('id', ''))[:16]}… names aggregation committee {short}, which "
            f"this provider's policy does not accept (it accepts {len(accepted)} committee(s)); "
            "nothing sent. Add the committee to the policy's 'committees' to take part"
        )
    if committee is None:
        raise AccessDenied(f"committee {short} is not registered on the ledger: nothing sent")
    try:
        members = list(committee["members"])
        signs = [str(m["sign"]) for m in members]
        boxes = [str(m["box"]) for m in members]
        n, t = len(members), int(committee["t"])
        ok_shape = int(committee["n"]) == n and t >= 0 and n >= 3 * t + 1
        params = job["params"]
        same = (
            list(job["aggregators"]) == signs
            and list(params["aggregator_keys"]) == boxes
            and int(params["degree"]) == t
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AccessDenied(
            f"committee {short} or the job is malformed ({exc}): nothing sent"
        ) from None
    if not ok_shape:
        raise AccessDenied(f"committee {short} is not a BFT committee (n ≥ 3t + 1): nothing sent")
    if not same:
        raise AccessDenied(
            f"job {str(job.get('id', ''))[:16]}… lists aggregators, keys or a degree other "
            f"than registered committee {short}'s: nothing sent"
        )
    return n, t


def seeded_aggregators(job: str, provider: str, n: int, t: int) -> list[int]:
    """The ``t`` aggregators whose shares of ``provider``'s submission to ``job`` are sent
    as 32-byte seeds: ``t`` consecutive indices (mod n) from one that the job and provider
    names hash to.

    Any t parties may be the seeded ones (the sharing has the same distribution); spreading
    them spreads the work: a seeded aggregator expands its shares from a seed (AES-256-CTR), others
    decrypt and decode them in full, and with the first t always seeded those t would do
    every provider's expansion. Post: ``t`` distinct indices in ``[0, n)``.
    """
    start = int.from_bytes(H(b"kaires/provider/seeded", job.encode(), provider.encode())[:4])
    return [(start + k) % n for k in range(t)]


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
    committee: Mapping[str, Any] | None = None,
) -> tuple[Tx, SealedSubmission]:
    """The CALYPSO write and the sealed submission of ``meas`` for committed ``job`` (§2).

    One fresh key per aggregator is written to the trustees' key ``lts_X`` (hex) under the
    provider's policy version; the Shamir-shared rows and proof are sealed under those keys
    and the manifest is signed. ``sign_write(kind, payload)`` signs the write transaction
    (through a ledger client online, or with a known counter offline, as a Flower client).

    ``committee``: the registered committee entry the caller checked the job against
    (:func:`check_job_committee`); n and t are then the registry's (and must be the job's).
    Without it they are the job's, which the caller must have pinned itself (the Flower
    client checks the job's committee against the one it trusts).
    """
    schema.forget_unused_digests()  # the last job's parts, if only the digest memo holds them
    n = len(job["aggregators"])
    t = int(job["params"]["degree"])
    if committee is not None and (len(committee["members"]), int(committee["t"])) != (n, t):
        raise AccessDenied(
            f"job {str(job['id'])[:16]}… deals {n} shares of degree {t}, its registered "
            f"committee has n = {len(committee['members'])}, t = {committee['t']}: nothing sent"
        )
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
        # a simulated faulty provider keeps the first t seeded, so that its fault lands
        # where PROVIDER_FAULTS says (e.g. the last aggregator's share made inconsistent)
        seeded=None if fault is not None else seeded_aggregators(job["id"], policy_id, n, t),
    )
    sub = sign_manifest(
        identity, parts, job=job["id"], provider=policy_id, circuit=cid, write=tx.id
    )
    return tx, sub
