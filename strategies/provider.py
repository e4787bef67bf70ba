"""The data provider inside a Flower ClientApp: identity, policy, job checks, sealing.

A Flower client never talks to the Kaires committees. Everything it needs reaches it in
the ServerApp's messages, and it trusts none of it without a proof:

- the ledger's **genesis block**, whose hash must be the chain id the provider trusts
  (``kaires-trusted-chain-id`` in the node config);
- the **aggregation committee** (aggregators' Ed25519 and X25519 keys, Shamir degree t),
  whose registry id (:func:`kaires_fl.ledger.committees.committee_id`) must be the one it
  trusts (``kaires-trusted-committee``) and which its policy names (``terms["committees"]``:
  the ledger refuses a job on any other committee), and the **LTS** id
  (``kaires-trusted-lts``). Without these checks a coordinator could name aggregators it
  controls, or an LTS it holds the key of, and open the provider's shares;
- for each job, **state proofs** (verifiable offline from the genesis block) of the job
  entry, the LTS entry, the provider's own policy and its transaction counter.

The provider then checks the job against its *own* policy (the consumer is one it
grants, the statistic one it allows, it is included and not excluded), encodes its data
with the job's statistic, CALYPSO-writes one key per aggregator (a ``calypso.write``
transaction it signs; the ServerApp only relays it) and seals its shares
(:mod:`kaires_fl.aggregation.submission`).

Node configuration (``flower-supernode --node-config``; security settings are read from
the node config only, never from the run config, which the ServerApp's side chooses):
``kaires-key`` (64 hex chars: an Ed25519 seed), ``kaires-trusted-chain-id``,
``kaires-trusted-committee``, ``kaires-trusted-lts``, ``kaires-grants`` (comma-separated
consumer keys), ``kaires-provider`` (label, default ``node-<partition-id>``).

**Simulation only** (``kaires-simulation = true`` in the node config, or
``make_kaires_mod(simulation=True)``): a missing trust anchor is pinned at enrolment in
the node's Context state (trust on first use), a missing key is derived from the
*public* seed ``kaires-seed`` (run config) and the label, and a missing grant list grants
the consumer that enrols the node. Outside simulation each of these is refused with a
ConfigError naming the setting to add; in simulation each use is logged as a warning.
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
FLOWER_FAULTS = (
    "over_norm",
    "underweight",
    "batch_inflation",
    "inflated_metric",
    "out_of_range",
    "inconsistent_shares",
    "bad_proof",
)
#: How many copies of its measurement a ``"batch_inflation"`` provider submits.
INFLATED_BATCH = 50


@dataclass
class ProviderPolicy:
    """What a provider allows: the consumers it grants (hex Ed25519 keys; None = the
    consumer that asks at enrolment, trust on first use: simulation only) and its policy
    terms (``min_providers`` / ``max_jobs`` None: the ledger's safe defaults,
    :func:`kaires_fl.ledger.darc.data_terms`; ``privacy_budget=(ε, δ)``: the differential
    privacy all its rounds together may spend, None: no budget)."""

    grants: Sequence[str] | None = None
    statistics: Sequence[str] = ("*",)
    price: int = 0
    min_providers: int | None = None
    max_jobs: int | None = None
    privacy_budget: tuple[float, float] | None = None

    def terms(self, payee: str, committees: Sequence[str]) -> dict[str, Any]:
        """The policy's ledger terms, naming the aggregation ``committees`` it accepts."""
        from kaires_fl.ledger.darc import data_terms

        kw: dict[str, Any] = {}
        if self.min_providers is not None:
            kw["min_providers"] = self.min_providers
        if self.max_jobs is not None:
            kw["max_jobs"] = self.max_jobs
        if self.privacy_budget is not None:
            kw["privacy_budget"] = self.privacy_budget
        return data_terms(
            payee,
            statistics=list(self.statistics),
            price=self.price,
            committees=list(committees),
            **kw,
        )


def _config_value(context: Any, key: str) -> Any:
    """A node-config setting (the node operator's), or None."""
    v = context.node_config.get(key)
    return None if v in (None, "") else v


def _flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("1", "true", "yes")


_WARNED: set[str] = set()


def _warn_simulation(what: str) -> None:
    """Log once per process that a simulation-only convenience is in use."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    from logging import WARNING

    from flwr.supercore import log

    log(WARNING, "kaires_mod SIMULATION ONLY: %s — never use this in a deployment", what)


def _simulation_only(simulation: bool, what: str, setting: str) -> None:
    """Allow a simulation-only convenience (warned), or refuse it with a ConfigError."""
    if simulation:
        _warn_simulation(what)
        return
    from kaires_fl.errors import ConfigError

    raise ConfigError(
        f"{what} is a simulation-only convenience: set {setting} in the node config "
        "(flower-supernode --node-config), or kaires-simulation = true in a simulation"
    )


@dataclass
class FlowerProvider:
    """One ClientApp's provider (see the module docstring)."""

    label: str
    identity: Any
    policy: ProviderPolicy = field(default_factory=ProviderPolicy)
    fault: str | None = None
    simulation: bool = False

    @classmethod
    def from_context(
        cls,
        context: Any,
        policy: ProviderPolicy | None = None,
        fault: str | None = None,
        simulation: bool = False,
    ) -> FlowerProvider:
        """The provider of the node running ``context`` (module docstring).

        Raises
        ------
        ConfigError
            on a malformed ``kaires-key``, or a simulation-only default outside simulation.
        """
        from kaires_fl.crypto.sign import H, Identity
        from kaires_fl.errors import ConfigError

        simulation = simulation or _flag(_config_value(context, "kaires-simulation"))
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
            _simulation_only(
                simulation, "a provider key derived from the public kaires-seed", "kaires-key"
            )
            run_seed = str(context.run_config.get("kaires-seed") or DEFAULT_SEED)
            ident = Identity.from_seed(
                H(b"kaires/flower/provider", run_seed.encode(), str(label).encode())
            )
        if policy is None:
            grants = _config_value(context, "kaires-grants")
            policy = ProviderPolicy(
                grants=None if grants is None else [g.strip() for g in str(grants).split(",")]
            )
        if fault is not None and fault not in FLOWER_FAULTS:
            raise ConfigError(f"unknown provider fault {fault!r}; use one of {FLOWER_FAULTS}")
        return cls(str(label), ident, policy, fault, simulation)

    @property
    def policy_id(self) -> str:
        """``provider.flwr.<label>.<public key>``: bound to this provider's key, so no other
        node can register (squat) it."""
        from kaires_fl.ledger.darc import bound_policy_id

        return bound_policy_id(f"provider.flwr.{self.label}", self.public)

    @property
    def public(self) -> str:
        return str(self.identity.public.hex())

    # -- trust anchors -------------------------------------------------------------------
    @staticmethod
    def trusted(context: Any, key: str) -> str | None:
        """A configured trust anchor (``kaires-trusted-chain-id`` /
        ``kaires-trusted-committee`` / ``kaires-trusted-lts``) or the one pinned at
        enrolment (simulation) in the node's state."""
        v = _config_value(context, key)
        if v is not None:
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
                "kaires-trusted-chain-id in its node config; configure the chain id (or, in a "
                "simulation, enrol it first: KairesFedAvg does)"
            )
        if genesis.chain_id != want:
            raise InvalidProof(
                f"the job is on ledger {genesis.chain_id[:16]}…, but this provider trusts "
                f"ledger {want[:16]}…: refusing a job from an unknown ledger"
            )
        return genesis

    # -- enrolment -----------------------------------------------------------------------
    def enrol(self, context: Any, config: Mapping[str, Any]) -> dict[str, Any]:
        """Check (or, in simulation, pin) the ledger, the committee and the LTS, and sign
        this provider's policy and the enrolment challenge.

        Returns the reply record: ``enrolment`` = :class:`~kaires_fl.strategies.wire.
        Enrolment` (key, policy id, signed ``darc.create`` and the signature of
        :func:`enrol_message`: the challenge and this Flower node's id, so the reply cannot
        be replayed by another node).
        """
        from kaires_fl.errors import InvalidProof
        from kaires_fl.ledger.block import Genesis
        from kaires_fl.ledger.tx import make_tx
        from kaires_fl.roles.provider import use_rule

        genesis = Genesis.decode(bytes(config[wire.GENESIS]))
        desc = committee_from_config(config)
        cid = committee_id_of(desc)
        for key, value in (
            ("kaires-trusted-chain-id", genesis.chain_id),
            ("kaires-trusted-committee", cid),
            ("kaires-trusted-lts", str(desc["lts"])),
        ):
            want = self.trusted(context, key)
            if want is None:
                _simulation_only(self.simulation, f"trust on first use of {key}", key)
                self.pin(context, key, value)
            elif want != value:
                raise InvalidProof(
                    f"enrolment names {key} {value[:16]}…, but this provider trusts "
                    f"{want[:16]}…: refusing to enrol with another ledger, committee or LTS"
                )
        grants = self.policy.grants
        if grants is None:
            _simulation_only(
                self.simulation, "granting whichever consumer enrols the node", "kaires-grants"
            )
            grants = [str(config[wire.CONSUMER])]
        payload = {
            "id": self.policy_id,
            "rules": {"_evolve": f"ed25519:{self.public}", "use": use_rule(list(grants))},
            "terms": self.policy.terms(self.public, [cid]),
        }
        tx = make_tx(genesis.chain_id, "darc.create", payload, 1, self.identity)
        challenge = config.get(wire.CHALLENGE)
        if not isinstance(challenge, bytes) or len(challenge) != 32:
            raise InvalidProof("an enrolment needs a 32-byte challenge (kaires.challenge)")
        sig = self.identity.sign(
            ENROL_CONTEXT, enrol_message(genesis.chain_id, challenge, int(context.node_id))
        )
        return {
            wire.ENROLMENT: wire.encode_enrolment(
                self.public, self.policy_id, wire.encode_tx(tx), sig
            )
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
        cid = self.trusted(context, "kaires-trusted-committee")
        lts_id = self.trusted(context, "kaires-trusted-lts")
        try:
            named = committee_id_of(
                {
                    "aggregators": job["aggregators"],
                    "aggregator_keys": job["params"].get("aggregator_keys"),
                    "degree": job["params"].get("degree"),
                }
            )
        except (EncodingError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidProof(f"job {job_id[:16]}… names no valid committee: {exc}") from exc
        if cid is None or named != cid or job.get("committee", cid) != cid:
            raise InvalidProof(
                f"job {job_id[:16]}… names an aggregation committee this provider does not "
                "trust: refused (its shares would go to unknown aggregators)"
            )
        try:
            desc = committee_from_config(config)
        except EncodingError as exc:
            raise InvalidProof(f"job {job_id[:16]}… comes without its committee: {exc}") from exc
        if lts_id is None or desc["lts"] != lts_id or job["params"].get("lts", lts_id) != lts_id:
            raise InvalidProof(
                f"job {job_id[:16]}… names an LTS this provider does not trust: refused (its "
                "keys would be written to an unknown secret-management committee)"
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
        from kaires_fl.aggregation.submission import PROVIDER_FAULTS
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
            fault=self.fault if self.fault in PROVIDER_FAULTS else None,
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


ENROL_CONTEXT = b"kaires/flower/enrol"


def enrol_message(chain: str, challenge: bytes, node_id: int) -> bytes:
    """What a provider signs at enrolment: the ledger, the ServerApp's fresh challenge and
    the Flower node id the reply comes from (a replayed reply fails at another node)."""
    from kaires_fl.ledger.encoding import canonical

    return bytes(canonical({"chain": chain, "challenge": challenge.hex(), "node": int(node_id)}))


def committee_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The committee description of a Kaires message (``lts``, ``aggregators``,
    ``aggregator_keys``, ``degree``: :func:`~kaires_fl.strategies.wire.decode_committee`).

    Raises
    ------
    EncodingError
        if it is missing or malformed.
    """
    return wire.decode_committee(config.get(wire.COMMITTEE))


def committee_id_of(desc: Mapping[str, Any]) -> str:
    """The registry id (:func:`kaires_fl.ledger.committees.committee_id`) of the committee
    a description or job names (``aggregators``, ``aggregator_keys``, ``degree``).

    Raises
    ------
    EncodingError
        if the keys are not two equally long lists of hex keys or the degree not an int.
    """
    from kaires_fl.errors import EncodingError
    from kaires_fl.ledger.committees import committee_id

    signs, boxes, t = desc.get("aggregators"), desc.get("aggregator_keys"), desc.get("degree")
    if (
        not isinstance(signs, list)
        or not isinstance(boxes, list)
        or len(signs) != len(boxes)
        or not signs
        or not all(isinstance(k, str) for k in [*signs, *boxes])
        or not isinstance(t, int)
        or isinstance(t, bool)
    ):
        raise EncodingError("a committee is equally many aggregator keys and an integer degree")
    return committee_id(signs, boxes, t)


__all__ = [
    "DEFAULT_SEED",
    "ENROL_CONTEXT",
    "FLOWER_FAULTS",
    "FlowerProvider",
    "JobOffer",
    "ProviderPolicy",
    "committee_from_config",
    "committee_id_of",
    "enrol_message",
]
