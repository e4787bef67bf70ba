"""The data provider inside a Flower ClientApp: identity, policy, job checks, sealing.

A Flower client never talks to the Kaires committees. Everything it needs reaches it in
the ServerApp's messages, and it trusts none of it without a proof:

- the ledger's **genesis block**, whose hash must be the chain id the provider trusts
  (``kaires-trusted-chain-id`` in the node or run config; otherwise pinned at enrolment and kept
  in the node's Context state: trust on first use, for simulation);
- the **committee** (LTS id, aggregators' Ed25519 and X25519 keys, Shamir degree), whose
  hash must be the one it trusts (``kaires-trusted-committee`` in the config; otherwise pinned at
  enrolment). Without this check a coordinator could name aggregators it controls, or an
  LTS it holds the key of, and open the provider's shares;
- for each job, **state proofs** (verifiable offline from the genesis block) of the job
  entry, the LTS entry, the provider's own policy and its transaction counter.

The provider then checks the job against its *own* policy (the consumer is one it
grants, the statistic one it allows, it is included and not excluded), encodes its data
with the job's statistic, CALYPSO-writes one key per aggregator (a ``calypso.write``
transaction it signs; the ServerApp only relays it) and seals its shares
(:mod:`kaires_fl.aggregation.submission`).

Identities: ``kaires-key`` (64 hex chars: an Ed25519 seed) in the node config, or in
simulation a key derived from ``kaires-seed`` (run config) and the provider's label
(``kaires-provider`` in the node config, default ``node-<partition-id>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import wire

#: The run-config seed that simulated providers derive their keys from when none is set.
DEFAULT_SEED = "kaires-flower-simulation"
#: Fault behaviours a simulated provider can be given (tests and demos).
FLOWER_FAULTS = ("over_norm", "out_of_range", "inconsistent_shares", "bad_proof")


@dataclass
class ProviderPolicy:
    """What a provider allows: the consumers it grants (hex Ed25519 keys; None = the
    consumer that asks at enrolment, trust on first use) and its policy terms."""

    grants: Sequence[str] | None = None
    statistics: Sequence[str] = ("*",)
    price: int = 0
    min_providers: int = 1
    max_jobs: int | None = None


def committee_hash(desc: Mapping[str, Any]) -> str:
    """Hash of a committee description (LTS id, aggregator keys, degree)."""
    from kaires_fl.crypto.sign import H
    from kaires_fl.ledger.encoding import canonical

    obj = {k: desc[k] for k in ("lts", "aggregators", "aggregator_keys", "degree")}
    return H(b"kaires/flower/committee", canonical(obj)).hex()


def _config_value(context: Any, key: str) -> Any:
    for source in (context.node_config, context.run_config):
        if key in source:
            return source[key]
    return None


@dataclass
class FlowerProvider:
    """One ClientApp's provider (see the module docstring)."""

    label: str
    identity: Any
    policy: ProviderPolicy = field(default_factory=ProviderPolicy)
    fault: str | None = None

    @classmethod
    def from_context(
        cls, context: Any, policy: ProviderPolicy | None = None, fault: str | None = None
    ) -> FlowerProvider:
        """The provider of the node running ``context`` (module docstring)."""
        from kaires_fl.crypto.sign import H, Identity
        from kaires_fl.errors import ConfigError

        label = _config_value(context, "kaires-provider")
        if label is None:
            pid = context.node_config.get("partition-id")
            label = f"node-{pid if pid is not None else context.node_id}"
        key = _config_value(context, "kaires-key")
        if key is not None:
            try:
                seed = bytes.fromhex(str(key))
            except ValueError:
                seed = b""
            if len(seed) != 32:
                raise ConfigError("kaires-key must be 64 hex characters (a 32-byte Ed25519 seed)")
            ident = Identity.from_seed(seed)
        else:
            run_seed = str(_config_value(context, "kaires-seed") or DEFAULT_SEED)
            ident = Identity.from_seed(
                H(b"kaires/flower/provider", run_seed.encode(), str(label).encode())
            )
        if policy is None:
            grants = _config_value(context, "kaires-grants")
            policy = ProviderPolicy(
                grants=None if grants in (None, "") else [g.strip() for g in str(grants).split(",")]
            )
        if fault is not None and fault not in FLOWER_FAULTS:
            raise ConfigError(f"unknown provider fault {fault!r}; use one of {FLOWER_FAULTS}")
        return cls(str(label), ident, policy, fault)

    @property
    def policy_id(self) -> str:
        from kaires_fl.roles.provider import policy_id_for

        return policy_id_for(f"flwr.{self.label}")

    @property
    def public(self) -> str:
        return str(self.identity.public.hex())

    # -- trust anchors -------------------------------------------------------------------
    @staticmethod
    def trusted(context: Any, key: str) -> str | None:
        """A configured trust anchor (``kaires-trusted-chain-id`` /
        ``kaires-trusted-committee``) or the one pinned at enrolment in the node's state."""
        v = _config_value(context, key)
        if v not in (None, ""):
            return str(v)
        rec = context.state.config_records.get("kaires")
        return None if rec is None or key not in rec else str(rec[key])

    @staticmethod
    def pin(context: Any, key: str, value: str) -> None:
        from flwr.app import ConfigRecord

        rec = context.state.config_records.get("kaires")
        if rec is None:
            rec = ConfigRecord()
            context.state["kaires"] = rec
        rec[key] = value

    def check_genesis(self, context: Any, genesis_bytes: bytes) -> Any:
        """The genesis block, if its hash is the chain id this provider trusts."""
        from kaires_fl.errors import InvalidProof
        from kaires_fl.ledger.block import Genesis

        genesis = Genesis.decode(bytes(genesis_bytes))
        want = self.trusted(context, "kaires-trusted-chain-id")
        if want is None:
            raise InvalidProof(
                "no trusted ledger: this provider was never enrolled and has no "
                "kaires-trusted-chain-id in its config; enrol it first (KairesFedAvg does) or "
                "configure the chain id"
            )
        if genesis.chain_id != want:
            raise InvalidProof(
                f"the job is on ledger {genesis.chain_id[:16]}…, but this provider trusts "
                f"ledger {want[:16]}…: refusing a job from an unknown ledger"
            )
        return genesis

    # -- enrolment -----------------------------------------------------------------------
    def enrol(self, context: Any, config: Mapping[str, Any]) -> dict[str, Any]:
        """Pin the ledger and committee (unless configured) and sign this provider's policy.

        Returns the reply record: ``public``, ``policy``, ``policy-tx``.
        """
        from kaires_fl.errors import InvalidProof
        from kaires_fl.ledger.block import Genesis
        from kaires_fl.ledger.tx import make_tx
        from kaires_fl.roles.provider import use_rule

        genesis = Genesis.decode(bytes(config[wire.GENESIS]))
        desc = _committee_from_config(config)
        for key, value in (
            ("kaires-trusted-chain-id", genesis.chain_id),
            ("kaires-trusted-committee", committee_hash(desc)),
        ):
            want = self.trusted(context, key)
            if want is None:
                self.pin(context, key, value)
            elif want != value:
                raise InvalidProof(
                    f"enrolment names {key} {value[:16]}…, but this provider trusts "
                    f"{want[:16]}…: refusing to enrol with another ledger or committee"
                )
        grants = self.policy.grants
        if grants is None:
            grants = [str(config[wire.CONSUMER])]
        from kaires_fl.ledger.darc import data_terms

        payload = {
            "id": self.policy_id,
            "rules": {"_evolve": f"ed25519:{self.public}", "use": use_rule(list(grants))},
            "terms": data_terms(
                self.public,
                statistics=list(self.policy.statistics),
                max_jobs=self.policy.max_jobs,
                min_providers=self.policy.min_providers,
                price=self.policy.price,
            ),
        }
        tx = make_tx(genesis.chain_id, "darc.create", payload, 1, self.identity)
        return {
            "public": self.public,
            "policy": self.policy_id,
            "policy-tx": wire.encode_tx(tx),
        }

    # -- one job -------------------------------------------------------------------------
    def check_job(self, context: Any, config: Mapping[str, Any]) -> JobOffer:
        """Verify a job offer (module docstring) and return what sealing needs.

        Raises
        ------
        InvalidProof / AuditError
            if the genesis, the committee or a state proof is not the trusted one.
        AccessDenied
            if the job does not include this provider or its own policy refuses it (the
            message says why).
        """
        from kaires_fl.errors import AccessDenied, EncodingError, InvalidProof
        from kaires_fl.ledger.audit import verify_job
        from kaires_fl.ledger.contracts import counter_key
        from kaires_fl.ledger.darc import darc_key
        from kaires_fl.secret_management.contracts import lts_key

        genesis = self.check_genesis(context, config[wire.GENESIS])
        job_id = str(config[wire.JOB])
        if wire.PROOFS not in config:
            raise InvalidProof(f"job {job_id[:16]}… comes without its ledger proofs: refused")
        try:
            proofs = wire.decode_proofs(bytes(config[wire.PROOFS]))
        except EncodingError as exc:
            raise InvalidProof(f"the job's ledger proofs are malformed: {exc}") from exc
        if "job" not in proofs:
            raise InvalidProof(f"job {job_id[:16]}… comes without its ledger proof: refused")
        job = verify_job(proofs["job"], genesis, job_id)
        try:
            desc = _committee_from_config(config)
        except (EncodingError, KeyError, TypeError, ValueError) as exc:
            raise InvalidProof(f"job {job_id[:16]}… comes without its committee: {exc}") from exc
        named = {
            "lts": desc.get("lts"),
            "aggregators": job["aggregators"],
            "aggregator_keys": job["params"].get("aggregator_keys"),
            "degree": job["params"].get("degree"),
        }
        if committee_hash(named) != self.trusted(context, "kaires-trusted-committee"):
            raise InvalidProof(
                f"job {job_id[:16]}… names an aggregation committee or LTS this provider does "
                "not trust: refused (its shares would go to unknown aggregators)"
            )
        pid = self.policy_id
        if pid in job.get("excluded", {}):
            raise AccessDenied(
                f"provider {self.label}: the ledger excluded it from job {job_id[:16]}…: "
                f"{job['excluded'][pid]}"
            )
        if pid not in job["providers"]:
            raise AccessDenied(
                f"provider {self.label} is not included in job {job_id[:16]}…: nothing to send"
            )
        grants = self.policy.grants
        if grants is not None and job["consumer"] not in grants:
            raise AccessDenied(
                f"provider {self.label}'s policy does not grant consumer {job['consumer'][:16]}…"
                f" (it grants {[g[:16] + '…' for g in grants] or 'nobody'}): no data sent"
            )
        stats = list(self.policy.statistics)
        if "*" not in stats and job["statistic"] not in stats:
            raise AccessDenied(
                f"provider {self.label}'s policy does not allow statistic {job['statistic']!r}"
                f" (it allows {stats}): no data sent"
            )
        lts_id = str(desc["lts"])
        entries = {}
        for name, key in (
            ("lts", lts_key(lts_id)),
            ("policy", darc_key(pid)),
            ("counter", counter_key(self.public)),
        ):
            proof = proofs.get(name)
            if proof is None or proof.key != key:
                raise InvalidProof(f"job {job_id[:16]}… lacks a ledger proof of {key!r}: refused")
            entries[name] = proof.verify(genesis)
        if entries["lts"] is None or entries["policy"] is None:
            raise InvalidProof(f"the LTS or the policy of job {job_id[:16]}… is not on the ledger")
        if entries["policy"]["rules"]["_evolve"] != f"ed25519:{self.public}":
            raise AccessDenied(f"policy {pid!r} on the ledger is not owned by this provider")
        return JobOffer(
            genesis=genesis,
            job=job,
            lts_id=lts_id,
            lts=entries["lts"],
            policy_version=int(entries["policy"]["version"]),
            counter=int(entries["counter"] or 0) + 1,
        )

    def seal(self, offer: JobOffer, measurements: np.ndarray) -> dict[str, Any]:
        """CALYPSO write + sealed submission of ``measurements`` for ``offer``'s job.

        Returns the reply record: ``policy``, ``write-tx`` and the
        :func:`~kaires_fl.strategies.wire.submission_record` fields.
        """
        from kaires_fl.aggregation.job import flp_for, job_statistic
        from kaires_fl.ledger.tx import make_tx
        from kaires_fl.roles.provider import seal_submission

        job = offer.job
        tx, sub = seal_submission(
            self.identity,
            self.policy_id,
            job,
            flp_for(job_statistic(job)),
            measurements,
            lts_id=offer.lts_id,
            lts_X=offer.lts["X"],
            policy_version=offer.policy_version,
            sign_write=lambda kind, payload: make_tx(
                offer.genesis.chain_id, kind, payload, offer.counter, self.identity
            ),
            fault=self.fault if self.fault != "over_norm" else None,
        )
        return {
            "policy": self.policy_id,
            "write-tx": wire.encode_tx(tx),
            **wire.submission_record(sub),
        }


@dataclass
class JobOffer:
    """A verified job: the genesis, the job entry, the LTS, this provider's policy version
    and its next transaction counter."""

    genesis: Any
    job: dict[str, Any]
    lts_id: str
    lts: dict[str, Any]
    policy_version: int
    counter: int


def _committee_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    from kaires_fl.ledger.encoding import decode_canonical

    desc = decode_canonical(bytes(config[wire.COMMITTEE]))
    if not isinstance(desc, dict):
        raise ValueError("the committee description must be a mapping")
    return dict(desc)


__all__ = ["DEFAULT_SEED", "FLOWER_FAULTS", "FlowerProvider", "JobOffer", "ProviderPolicy"]
