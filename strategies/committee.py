"""The ServerApp's connection to the Kaires committees (the consumer + the coordinator).

The ServerApp is the *data consumer* (it signs the job and opens the aggregate sealed to
its key) and the *untrusted coordinator* (it relays the providers' transactions to the
ledger and their sealed submissions to the aggregators). :class:`CommitteeConnection`
does both over a committee:

- ``kaires-committee = "local"`` (default): an in-process
  :class:`~kaires_fl.simulation.LocalCommittee` (ledger, trustees, aggregators on the
  in-memory transport), sized by ``kaires-ledger-nodes``, ``kaires-trustees``,
  ``kaires-aggregators``, ``kaires-threshold`` and seeded by ``kaires-committee-seed``
  (an integer, default 0; ``kaires-seed`` is the providers' key seed, a different setting);
  ``kaires-workers`` threads on which its aggregators and trustees work side by side
  (``LocalCommittee(workers=...)``, default 1; the same results for any count);
  ``kaires-db-dir`` keeps its ledger in SQLite files there (``LocalCommittee(db_dir=...)``:
  a later run with the same settings reopens and continues the chain);
- ``kaires-committee = "<path>/group.toml"`` (deployment): the committee's node
  processes, reached with :func:`kaires_fl.connect` (authenticated TCP, keys pinned in
  the group file); the ServerApp is a client of them — it holds no node key, no trustee
  share and no aggregator key. ``kaires-client-key`` names a client key file (default:
  fresh keys per run), ``kaires-connect-timeout`` the seconds to wait for the committee.

One round = one job (protocol.md): :meth:`commit_job` (step 1), then, with the providers'
relayed writes and sealed submissions, :meth:`aggregate` (steps 2.3–7). The connection
never sees a provider's plaintext: the coordinator log of the committee records what it
handled, for audits and tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaires_fl.committee import Committee, default_committee
from kaires_fl.errors import AccessDenied, ConfigError, InvalidSubmission, LedgerError

from . import wire


@dataclass
class RoundResult:
    """One job's outcome as the consumer sees it.

    ``aggregate`` is the statistic's decoded aggregate (None if the job failed);
    ``accepted`` / ``rejected`` (policy id → reason) / ``refused`` (node's submission
    refused before aggregation: bad write or malformed, policy id → reason);
    ``faulty_aggregators`` (index → reason); ``num_measurements``; ``timings``.
    """

    job: str
    status: str
    aggregate: Any
    accepted: list[str]
    rejected: dict[str, str]
    refused: dict[str, str]
    faulty_aggregators: dict[int, str]
    num_measurements: int
    why: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def describe_committee(committee: Any) -> str:
    """A one-line description of a committee (its kind, sizes and ids; no object address)."""
    if committee is None:
        return "a fresh LocalCommittee (created on first use)"
    if isinstance(committee, CommitteeConnection):
        committee = committee.committee
    parts = [type(committee).__name__]
    ids = getattr(committee, "aggregator_ids", None)
    if ids is not None:
        parts.append(f"{len(ids)} aggregators")
    for attr, label in (("threshold", "threshold"), ("committee_id", "committee")):
        value = getattr(committee, attr, None)
        if value is not None:
            text = str(value)
            parts.append(f"{label} {text[:12] + '…' if len(text) > 12 else text}")
    return ", ".join(parts)


class CommitteeConnection:
    """Consumer and coordinator over a :class:`~kaires_fl.committee.Committee` (a
    :class:`~kaires_fl.simulation.LocalCommittee` or a deployed one, ``kaires_fl.connect``).

    Parameters
    ----------
    committee:
        The committee (default: a fresh ``LocalCommittee()``).
    consumer:
        The consumer identity (default: the committee's own consumer).
    """

    def __init__(self, committee: Committee | None = None, consumer: Any | None = None) -> None:
        self.committee: Committee = committee if committee is not None else default_committee()
        committee = self.committee
        self.consumer = consumer or committee.consumer
        self.client = committee.client

    def __repr__(self) -> str:
        return f"CommitteeConnection({describe_committee(self.committee)})"

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> CommitteeConnection:
        """The committee the run config names (module docstring)."""
        kind = str(run_config.get("kaires-committee", "local"))
        if kind != "local":
            if not (kind.endswith(".toml") or os.path.exists(kind)):
                raise ConfigError(
                    f"kaires-committee = {kind!r} is neither 'local' nor a group.toml path"
                )
            # A deployed committee: this process is a client (consumer and coordinator),
            # holding no node key, no trustee share and no aggregator key.
            from kaires_fl.node.client import connect

            try:
                timeout = float(run_config.get("kaires-connect-timeout", 60.0))
            except (TypeError, ValueError):
                raise ConfigError("run config kaires-connect-timeout must be a number") from None
            key = run_config.get("kaires-client-key") or None
            return cls(connect(kind, key=key, timeout=timeout))
        from kaires_fl.simulation import LocalCommittee

        def _int(key: str, default: int) -> int:
            try:
                return int(run_config.get(key, default))
            except (TypeError, ValueError):
                raise ConfigError(f"run config {key} must be an integer") from None

        return cls(
            LocalCommittee(
                n_ledger=_int("kaires-ledger-nodes", 4),
                n_trustees=_int("kaires-trustees", 4),
                n_aggregators=_int("kaires-aggregators", 4),
                threshold=_int("kaires-threshold", 1),
                seed=_int("kaires-committee-seed", 0),
                db_dir=run_config.get("kaires-db-dir") or None,
                workers=_int("kaires-workers", 1),
            )
        )

    # -- what providers are told -----------------------------------------------------------
    @property
    def genesis_bytes(self) -> bytes:
        return bytes(self.committee.ledger.genesis.encode())

    @property
    def description(self) -> dict[str, Any]:
        """The committee providers pin: LTS id, aggregator keys, Shamir degree (a provider
        recomputes the registry id from them: ``provider.committee_id_of``)."""
        c = self.committee
        return {
            "lts": c.lts_id,
            "aggregators": [a.public.hex() for a in c.aggregator_ids],
            "aggregator_keys": [k.public.hex() for k in c.aggregator_keys],
            "degree": c.threshold,
        }

    @property
    def description_bytes(self) -> bytes:
        return wire.encode_committee(self.description)

    @property
    def consumer_public(self) -> str:
        return str(self.consumer.public)

    # -- step 0: providers' policies --------------------------------------------------------
    def enrol(
        self,
        replies: Mapping[int, Mapping[str, Any]],
        challenges: Mapping[int, bytes] | None = None,
        taken: Collection[str] = (),
    ) -> dict[int, str]:
        """Relay the providers' signed policy transactions (those not yet on the ledger).

        ``replies`` maps a Flower node id to its reply record (``enrolment``: a
        :class:`~kaires_fl.strategies.wire.Enrolment`), ``challenges`` a node id
        to the challenge it was sent, ``taken`` the policy ids already enrolled (by other
        nodes). Returns node id → policy id for the nodes enrolled. A reply is left out
        (reason in ``enrol_errors``) unless its ``enrol-sig`` is the enrolling key's
        signature of its own challenge and node id (a reply replayed by another node
        fails), its policy tx is a ``darc.create`` of its policy signed by that key, and
        no other node enrols the same policy.
        """
        from kaires_fl.crypto.sign import verify
        from kaires_fl.ledger.darc import darc_key

        from .provider import ENROL_CONTEXT, enrol_message

        out: dict[int, str] = {}
        txs = []
        self.enrol_errors: dict[int, str] = {}
        seen = set(taken)
        for node, rec in replies.items():
            try:
                enrolment = wire.decode_enrolment(rec.get(wire.ENROLMENT))
                public, pid = enrolment.public, enrolment.policy
                tx = wire.decode_tx(enrolment.policy_tx)
                tx.verify_signatures()
                if tx.kind != "darc.create" or tx.payload.get("id") != pid:
                    raise InvalidSubmission("the enrolment tx is not a darc.create of its policy")
                if tx.sender != public or tx.chain != self.client.chain:
                    raise InvalidSubmission(
                        "the policy tx is not signed by the enrolling key for this ledger"
                    )
                challenge = b"" if challenges is None else challenges.get(node)
                if challenge is None:
                    raise InvalidSubmission("a reply from a node that was not asked to enrol")
                verify(
                    bytes.fromhex(public),
                    ENROL_CONTEXT,
                    enrol_message(self.client.chain, challenge, node),
                    enrolment.signature,
                )
                if pid in seen:
                    raise InvalidSubmission(f"policy {pid!r} is already enrolled by another node")
            except Exception as exc:  # a malformed reply from one node must not stop others
                self.enrol_errors[node] = f"bad enrolment: {type(exc).__name__}: {exc}"
                continue
            seen.add(pid)
            self.committee.coordinator.note("relay-tx", tx)
            existing = self.client.get(darc_key(pid))
            if existing is None:
                txs.append((node, pid, tx))
            elif existing["rules"]["_evolve"] != f"ed25519:{tx.sender}":
                self.enrol_errors[node] = f"policy {pid!r} exists and belongs to another key"
                continue
            out[node] = pid
        if txs and getattr(self.committee, "registration", False):
            # simulation: the LocalCommittee governs its roster and admits the new providers
            from kaires_fl.ledger.identities import PROVIDER

            self.committee.ledger.admit(PROVIDER, [t.sender for _, _, t in txs])
        if txs:
            ids = self.client.submit_many([t for _, _, t in txs])
            for (node, pid, _), c in zip(txs, self.client.wait(ids, proof=False), strict=True):
                if not c.result.ok:
                    self.enrol_errors[node] = f"the ledger refused policy {pid}: {c.result.reason}"
                    out.pop(node, None)
        return out

    # -- step 1: the job --------------------------------------------------------------------
    def commit_job(
        self,
        statistic: Any,
        policy_ids: Sequence[str],
        privacy: Mapping[str, float] | None = None,
    ) -> dict[str, Any]:
        """Commit a job for ``statistic`` over the providers ``policy_ids``; returns the job
        entry (``providers`` included, ``excluded`` with the ledger's reasons).
        ``privacy``: ``{"epsilon", "delta"}`` of a job with differential privacy (the
        aggregators add the noise; the ledger debits the providers' privacy budgets).

        Raises
        ------
        AccessDenied
            if the ledger refuses the job (no provider grants this consumer, too few
            providers, …); the message carries the ledger's reason.
        """
        from kaires_fl.ledger.jobs import job_key

        c = self.committee
        payload = self.consumer.job_payload(
            statistic,
            list(policy_ids),
            c.committee_id,
            min_providers=c.min_providers,
            coordinator=c.coordinator.identity.public.hex(),
        )
        if privacy is not None:
            payload["privacy"] = dict(privacy)
        tx = self.client.sign(self.consumer.identity, "job.create", payload)
        c.coordinator.note("relay-tx", tx)
        (done,) = self.client.wait(self.client.submit_many([tx]), proof=False)
        if not done.result.ok:
            raise AccessDenied(f"the ledger refused the job: {done.result.reason}")
        job = self.client.get(job_key(tx.id))
        if job is None:
            raise LedgerError(f"job {tx.id[:16]}… committed but is not in the ledger state")
        return dict(job)

    def job_proofs(self, job_id: str, providers: Mapping[str, str]) -> dict[str, bytes]:
        """Per provider (policy id → public key) the encoded state proofs of the job, the
        LTS, its policy and its counter, all at the latest final block."""
        from kaires_fl.ledger.contracts import counter_key
        from kaires_fl.ledger.darc import darc_key
        from kaires_fl.ledger.jobs import job_key
        from kaires_fl.secret_management.contracts import lts_key

        keys = [job_key(job_id), lts_key(self.committee.lts_id)]
        for pid, pub in providers.items():
            keys += [darc_key(pid), counter_key(pub)]
        proofs = self.client.prove_many(keys)
        job_p, lts_p = proofs[0], proofs[1]
        out = {}
        for k, pid in enumerate(providers):
            out[pid] = wire.encode_proofs(
                {
                    "job": job_p,
                    "lts": lts_p,
                    "policy": proofs[2 + 2 * k],
                    "counter": proofs[3 + 2 * k],
                }
            )
        return out

    def admit_write(self, wtx: Any, senders: set[str]) -> None:
        """Refuse a write the ledger's mempool would drop: wrong chain, bad signatures, a
        counter that is not its sender's next one, or a second write of a sender in this
        batch. Such a tx would never be committed and would stall the round; every other
        check (the CALYPSO write contract) the ledger nodes run when they execute it, and a
        write they reject is refused from its recorded result (no dry run here: it would
        execute the contract once more).

        Raises
        ------
        LedgerError
            naming what is wrong.
        """
        from kaires_fl.ledger.contracts import counter_key

        if wtx.chain != self.client.chain:
            raise LedgerError("the write is for another ledger (chain id)")
        wtx.verify_signatures()
        last = int(self.client.get(counter_key(wtx.sender)) or 0)
        if wtx.counter != last + 1 or wtx.sender in senders:
            raise LedgerError(
                f"the write's counter {wtx.counter} is not its signer's next one ({last + 1}), "
                "or the signer already wrote in this round: replayed or out of order"
            )

    # -- steps 2.3–7 ------------------------------------------------------------------------
    def aggregate(
        self,
        job: Mapping[str, Any],
        statistic: Any,
        submissions: Mapping[str, tuple[bytes, Any]],
    ) -> RoundResult:
        """Relay the writes, close the inputs, run the aggregation, open the result.

        ``submissions`` maps a policy id to its ``(write-tx, submission)``: the write's
        bytes and the submission as bytes or as :func:`~.wire.submission_record` fields. A
        submission that is malformed, declares a batch above the statistic's
        (:func:`~kaires_fl.aggregation.submission.max_batch`: 1 for a model update), is not
        from an included provider, or whose write the ledger refuses is *refused* (reason
        recorded) and not aggregated.
        """
        c = self.committee
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        refused: dict[str, str] = {}
        writes, subs = [], []
        senders: set[str] = set()
        n = len(job["aggregators"])
        from kaires_fl.aggregation.submission import max_batch

        cap = max_batch(statistic, job)
        for pid, (wtx_b, sub_b) in submissions.items():
            try:
                if pid not in job["providers"]:
                    raise InvalidSubmission(f"{pid} is not included in the job")
                wtx = wire.decode_tx(wtx_b)
                sub = wire.decode_submission(sub_b)
                # B = 1 for model updates and provider-granularity statistics, the row cap
                # for records: a provider's batch counts its data once (issue 9, #6)
                sub.check(n, max_batch=cap)
                if sub.manifest.provider != pid or sub.manifest.job != job["id"]:
                    raise InvalidSubmission("the manifest names another provider or job")
                if sub.manifest.write != wtx.id or wtx.kind != "calypso.write":
                    raise InvalidSubmission("the manifest does not name its CALYPSO write")
                self.admit_write(wtx, senders)
            except Exception as exc:  # one bad node must not stop the round
                refused[pid] = f"{type(exc).__name__}: {exc}"
                continue
            senders.add(wtx.sender)
            writes.append(wtx)
            subs.append(sub)
            c.coordinator.note("relay-tx", wtx)
            c.coordinator.note("submission", sub)
        if writes:
            done = self.client.wait(self.client.submit_many(writes), proof=False)
            kept_w, kept_s = [], []
            for w, s, d in zip(writes, subs, done, strict=True):
                if d.result.ok:
                    kept_w.append(w)
                    kept_s.append(s)
                else:
                    refused[s.manifest.provider] = f"write refused: {d.result.reason}"
            writes, subs = kept_w, kept_s
            # the same admission the simulation applies: parts match the manifest, the
            # committed write is the manifest signer's, one submission per provider
            subs, dropped = c.coordinator.admit(job, subs)
            refused.update(dropped)
        timings["write"] = time.perf_counter() - t0
        if not subs:
            return RoundResult(
                job["id"], "failed", None, [], {}, refused, {}, 0, "no usable submission", timings
            )
        t0 = time.perf_counter()
        itx = self.client.sign(
            self.consumer.identity, "calypso.inputs", self.consumer.inputs_payload(job["id"], subs)
        )
        c.coordinator.note("relay-tx", itx)
        (d,) = self.client.wait(self.client.submit_many([itx]), proof=False)
        if not d.result.ok:
            raise LedgerError(f"closing the inputs was refused: {d.result.reason}")
        timings["inputs"] = time.perf_counter() - t0
        out = c.coordinator.run(
            job["id"], job["aggregators"], subs, lambda: c.coin_shares(job["id"])
        )
        for k, v in out["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
        t0 = time.perf_counter()
        r = out["receipt"]["receipt"]
        aggregate, bad = None, []
        if r["status"] == "done":
            raw, bad = self.consumer.open_result(job, out["receipt"], out["shares"], statistic)
            aggregate = statistic.decode(raw, int(r["num_measurements"]))
        timings["result"] = time.perf_counter() - t0
        index = {k: i for i, k in enumerate(job["aggregators"])}
        faulty = {index[k]: v for k, v in r.get("faulty_reasons", {}).items() if k in index}
        for i, why in out["failures"].items():
            faulty.setdefault(i, why)
        for i in bad:
            faulty.setdefault(i, "wrong or missing aggregate share")
        return RoundResult(
            job=job["id"],
            status=r["status"],
            aggregate=aggregate,
            accepted=list(r["accepted"]),
            rejected={p: r["reasons"].get(p, "rejected") for p in r["rejected"]},
            refused=refused,
            faulty_aggregators=dict(sorted(faulty.items())),
            num_measurements=int(r["num_measurements"]),
            why=str(r.get("why", "")),
            timings=timings,
        )


__all__ = ["CommitteeConnection", "RoundResult"]
