"""In-process Kaires committees: every role on one in-memory network, with fault injection.

:class:`LocalCommittee` runs the three cothorities — ``n_ledger`` BFT ledger nodes,
``n_trustees`` trustees holding a DKG key, ``n_aggregators`` BFT Prio aggregators (Shamir
degree ``threshold``) — plus the untrusted coordinator, on a
:class:`~kaires_fl.transport.memory.MemoryNetwork`. The same service code runs as on a
real network; the network's clock is simulated, so timeouts cost no wall time.

Set-up (genesis, DKG, the LTS on the ledger, balances, the aggregation committee
registered with ``committee.register``) happens once per committee; providers' policies
are created the first time a provider label is seen — naming the registered committee,
with the safe defaults (at least two providers per job, a finite job limit) unless
given — and reused by later jobs. ``registration=True`` switches the ledger's
provider/consumer allow-list on; the committee then admits its own parties.
:meth:`LocalCommittee.run_job` runs the whole flow of protocol.md for one statistic over
``{provider label: (X, y)}``.

Faults (``faults={"aggregator": {2: "byzantine"}, "provider": {5: "out_of_range"}}``):

- ``"ledger"``: ``"crash"`` (stopped node) or ``"byzantine"`` (equivocating leader,
  :mod:`kaires_fl.ledger.byzantine`), at most f = (n_ledger − 1) // 3;
- ``"trustee"``: ``"crash"`` or ``"byzantine"`` (wrong re-encrypted and coin shares), at
  most the trustees' threshold;
- ``"aggregator"``: ``"crash"`` or ``"byzantine"`` (wrong values at every step), at most
  ``threshold``; in a job with differential privacy also ``"no_noise"`` (deals zero noise:
  its range proof passes) or ``"big_noise"`` (deals noise out of its proven range: its
  proof fails and the deal is left out);
- ``"provider"`` (0-based index in the sorted provider labels of each job):
  ``"out_of_range"``, ``"inconsistent_shares"``, ``"bad_proof"``, ``"bad_seed"`` (seals
  another seed than the one its full shares were completed from; needs t ≥ 1).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
from threadpoolctl import threadpool_limits

from kaires_fl.aggregation.aggregator import AGGREGATOR_FAULTS
from kaires_fl.aggregation.job import AggregatorService, Coordinator
from kaires_fl.aggregation.submission import PROVIDER_FAULTS
from kaires_fl.crypto.envelope import EnvelopeKeyPair
from kaires_fl.crypto.sign import H, Identity
from kaires_fl.errors import AccessDenied, ConfigError, KairesError, LedgerError
from kaires_fl.ledger.client import LocalLedger
from kaires_fl.ledger.committees import committee_id, register_payload
from kaires_fl.ledger.darc import DEFAULT_MAX_JOBS, DEFAULT_MIN_PROVIDERS, darc_key
from kaires_fl.ledger.identities import CONSUMER, PROVIDER
from kaires_fl.ledger.jobs import job_key
from kaires_fl.ledger.node import LedgerConfig
from kaires_fl.privacy.mechanism import plan_noise
from kaires_fl.roles.consumer import Consumer
from kaires_fl.roles.provider import Provider, policy_id_for
from kaires_fl.secret_management.coin import CoinShare, combine_coin
from kaires_fl.secret_management.committee import TrusteeCommittee
from kaires_fl.secret_management.contracts import inputs_key
from kaires_fl.secret_management.evidence import prove_entries
from kaires_fl.secret_management.trustee import CoinRequest, collect_answers
from kaires_fl.transport.memory import MemoryNetwork

NODE_FAULTS = ("crash", "byzantine")
ROLES = ("ledger", "trustee", "aggregator", "provider")
_LEDGER_BYZANTINE = "equivocate"


@dataclass
class JobResult:
    """What :meth:`LocalCommittee.run_job` returns.

    ``aggregate`` is ``statistic.decode(...)`` of the reconstructed sum (None if the job
    failed), ``report`` a dict with ``job``, ``status``, ``accepted`` and ``rejected``
    (provider label → reason code), ``excluded`` (label → the ledger's reason),
    ``faulty_aggregators`` (index → reason), ``faulty_trustees``, ``num_measurements``,
    ``ledger_height``, ``receipt_height``, ``payments`` and ``timings`` (seconds per phase).
    """

    aggregate: Any
    report: dict[str, Any]
    receipt: dict[str, Any] | None = None
    raw_aggregate: np.ndarray | None = field(default=None, repr=False)


def _check_faults(
    faults: Mapping[str, Mapping[int, str]] | None, sizes: Mapping[str, int]
) -> dict[str, dict[int, str]]:
    out: dict[str, dict[int, str]] = {r: {} for r in ROLES}
    for role, table in (faults or {}).items():
        if role not in ROLES:
            raise ConfigError(f"unknown fault role {role!r}; use one of {ROLES}")
        allowed = (
            PROVIDER_FAULTS
            if role == "provider"
            else AGGREGATOR_FAULTS
            if role == "aggregator"
            else NODE_FAULTS
        )
        for idx, behaviour in dict(table).items():
            if behaviour not in allowed:
                raise ConfigError(
                    f"unknown {role} behaviour {behaviour!r} (index {idx}); use one of {allowed}"
                )
            if (
                not isinstance(idx, int | np.integer)
                or idx < 0
                or (role in sizes and idx >= sizes[role])
            ):
                raise ConfigError(
                    f"{role} fault index {idx!r} is outside 0..{sizes.get(role, '∞')} − 1"
                )
            out[role][int(idx)] = behaviour
    return out


_T = TypeVar("_T")


class LocalCommittee:
    """In-process ledger, trustee and aggregator committees (see the module docstring).

    Parameters
    ----------
    n_ledger, n_trustees, n_aggregators:
        Committee sizes (n_ledger ≥ 3f + 1; n_aggregators ≥ 3·threshold + 1).
    threshold:
        Shamir degree t of the aggregators (tolerates t crashed or Byzantine ones).
    faults:
        ``{role: {index: behaviour}}`` (module docstring).
    trustee_threshold:
        The trustees' threshold (default ``(n_trustees − 1) // 3``, at least 1 if n ≥ 3).
    price, min_providers, max_jobs:
        Default terms of the providers' policies created by this committee (defaults: free,
        at least two providers per job, a finite number of jobs per policy).
    registration:
        Switch the ledger's provider/consumer allow-list on (the committee admits the
        parties it creates); off by default in simulation.
    consumer_balance:
        Balance minted for the default consumer at genesis.
    workers:
        Threads on which the parties work side by side, each being its own machine
        (default 1: one after the other; the default committee of the estimators and the
        Flower strategies, :func:`kaires_fl.committee.default_committee`, uses one per CPU,
        at most 4): the providers encode and seal their submissions,
        and the aggregators and trustees handle the messages that reach them at the same
        instant (``MemoryNetwork(workers=...)``, its ``parallel`` endpoints). The field and
        proof kernels, hashing and libsodium release the GIL; results, rejections, blame
        and errors are the same for any count. A committee built here stays on one
        thread unless asked: code that patches a module global for one party's step (as
        fault tests do) would reach the parties beside it.
    db_dir:
        A directory where the ledger persists: one SQLite file per ledger node
        (``ledger-<i>.sqlite``, through ``LocalLedger(db_paths=...)``). A later committee with
        the same parameters and ``db_dir`` reopens the chain and continues it (every key is
        derived from ``seed``). None (default): in memory, gone when the committee is.

    A committee crosses processes (pickled estimators, ``GridSearchCV(n_jobs>1)``) by its
    :meth:`describe` output: the receiving process rebuilds it from these constructor
    parameters (:func:`kaires_fl.estimators.base.reconnect`).
    """

    #: The coordinator's address for the trustees' coin answers.
    coin_address = "coordinator-coin"

    def __init__(
        self,
        n_ledger: int = 4,
        n_trustees: int = 4,
        n_aggregators: int = 4,
        threshold: int = 1,
        faults: Mapping[str, Mapping[int, str]] | None = None,
        *,
        trustee_threshold: int | None = None,
        price: int = 0,
        min_providers: int = DEFAULT_MIN_PROVIDERS,
        max_jobs: int | None = DEFAULT_MAX_JOBS,
        registration: bool = False,
        consumer_balance: int = 10**9,
        seed: int = 0,
        round_timeout: float = 2.0,
        db_dir: str | os.PathLike[str] | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"workers = {workers}: give at least 1 thread")
        self.workers = workers
        self._params: dict[str, Any] = {
            "n_ledger": n_ledger,
            "n_trustees": n_trustees,
            "n_aggregators": n_aggregators,
            "threshold": threshold,
            "faults": {r: dict(v) for r, v in (faults or {}).items()},
            "trustee_threshold": trustee_threshold,
            "price": price,
            "min_providers": min_providers,
            "max_jobs": max_jobs,
            "registration": registration,
            "consumer_balance": consumer_balance,
            "seed": seed,
            "round_timeout": round_timeout,
            "db_dir": None if db_dir is None else os.path.abspath(os.fspath(db_dir)),
        }
        db_paths = None
        if db_dir is not None:
            os.makedirs(db_dir, exist_ok=True)
            db_paths = [os.path.join(db_dir, f"ledger-{i}.sqlite") for i in range(n_ledger)]
        if threshold < 0 or n_aggregators < 3 * threshold + 1:
            raise ConfigError(
                f"{n_aggregators} aggregators cannot tolerate threshold t = {threshold}: BFT "
                f"Prio needs n ≥ 3t + 1 = {3 * threshold + 1}; add aggregators or lower t"
            )
        t_T = trustee_threshold if trustee_threshold is not None else max(1, (n_trustees - 1) // 3)
        if n_trustees < 2 * t_T + 1:
            raise ConfigError(f"{n_trustees} trustees cannot use threshold {t_T}: need n ≥ 2t + 1")
        self.faults = _check_faults(
            faults, {"ledger": n_ledger, "trustee": n_trustees, "aggregator": n_aggregators}
        )
        f = (n_ledger - 1) // 3
        for role, bound in (("ledger", f), ("trustee", t_T), ("aggregator", threshold)):
            if len(self.faults[role]) > bound:
                raise ConfigError(
                    f"{len(self.faults[role])} faulty {role} node(s) exceed the {bound} the "
                    "committee tolerates; the result would not be guaranteed"
                )
        t0 = time.perf_counter()
        self.n_aggregators, self.threshold = n_aggregators, threshold
        self.price, self.min_providers, self.max_jobs = price, min_providers, max_jobs
        self.network = MemoryNetwork(seed=seed, workers=workers)
        tag = str(seed).encode()
        self.bank = Identity.from_seed(H(b"kaires/sim/bank", tag))
        self.consumer = Consumer(
            "consumer",
            Identity.from_seed(H(b"kaires/sim/consumer", tag)),
            EnvelopeKeyPair.from_seed(H(b"kaires/sim/consumer-x25519", tag)),
        )
        self.coordinator_id = Identity.from_seed(H(b"kaires/sim/coordinator", tag))
        self.ledger = LocalLedger(
            n_ledger,
            network=self.network,
            seed=seed,
            balances={self.bank.public: 10**15, self.consumer.identity.public: consumer_balance},
            byzantine={
                i: _LEDGER_BYZANTINE for i, b in self.faults["ledger"].items() if b == "byzantine"
            },
            config=LedgerConfig(view_timeout=0.2),
            registration=registration,
            db_paths=db_paths,
        )
        self.registration = registration
        for i, b in self.faults["ledger"].items():
            if b == "crash":
                self.ledger.crash(i)
        self.client = self.ledger.client("coordinator-ledger")
        if registration:
            self.ledger.admit(CONSUMER, [self.consumer.public])
        self.trustees = TrusteeCommittee.setup(
            self.client, n_trustees, t_T, faults=self.faults["trustee"], seed=tag
        )
        self.lts_id = self.trustees.lts.id
        self.aggregator_ids = [
            Identity.from_seed(H(b"kaires/sim/aggregator", tag, str(i).encode()))
            for i in range(n_aggregators)
        ]
        self.aggregator_keys = [
            EnvelopeKeyPair.from_seed(H(b"kaires/sim/aggregator-x25519", tag, str(i).encode()))
            for i in range(n_aggregators)
        ]
        self.committee_id = self.register_committee()
        self.aggregator_addresses = [f"aggregator-{i}" for i in range(n_aggregators)]
        self.aggregators: list[AggregatorService] = []
        for i in range(n_aggregators):
            behaviour = self.faults["aggregator"].get(i)
            svc = AggregatorService(
                i,
                self.aggregator_ids[i],
                self.aggregator_keys[i],
                self.network.endpoint(self.aggregator_addresses[i]),
                self.ledger.client(f"aggregator-{i}-ledger"),
                self.trustees.addresses,
                self.lts_id,
                behaviour=behaviour,
            )
            self.aggregators.append(svc)
            if behaviour == "crash":
                self.network.crash(self.aggregator_addresses[i])
        self.network.parallel.update([*self.aggregator_addresses, *self.trustees.addresses])
        self.coordinator = Coordinator(
            self.network.endpoint("coordinator"),
            self.network,
            self.client,
            self.aggregator_addresses,
            self.trustees.addresses,
            self.coordinator_id,
            round_timeout=round_timeout,
            lts_id=self.lts_id,
        )
        self.providers: dict[str, Provider] = {}
        self._trustee_faults: dict[int, str] = {}
        self.setup_seconds = time.perf_counter() - t0

    # -- parties ---------------------------------------------------------------------------
    def register_committee(self) -> str:
        """Register the aggregation committee on the ledger (every member signs, each
        proving knowledge of its re-encryption key); returns its id (idempotent)."""
        members = list(zip(self.aggregator_ids, self.aggregator_keys, strict=True))
        cid = committee_id(
            [i.public.hex() for i, _ in members],
            [k.public.hex() for _, k in members],
            self.threshold,
        )
        if self.client.get(f"committee/{cid}") is None:
            payload = register_payload(self.client.chain, members, self.threshold)
            ids = [i for i, _ in members]
            self._commit(
                [self.client.sign(ids[0], "committee.register", payload, cosigners=ids[1:])]
            )
        return cid

    def provider_identity(self, label: str) -> Identity:
        """The Ed25519 identity of simulated provider ``label`` (deterministic)."""
        return Identity.from_seed(H(b"kaires/sim/provider", label.encode()))

    def provider(self, label: Any) -> Provider:
        """The provider named ``label`` (created with its policy on first use)."""
        return self.ensure_providers([label])[0]

    def ensure_providers(
        self, labels: Sequence[Any], grants: Sequence[Consumer] | None = None
    ) -> list[Provider]:
        """Providers for ``labels``; new ones get an identity and a data policy granting
        ``grants`` (default: this committee's consumer), all committed in one block."""
        new = [str(lb) for lb in labels if str(lb) not in self.providers]
        txs = []
        consumers = [c.public for c in (grants or [self.consumer])]
        created = [Provider(lb, self.provider_identity(lb)) for lb in dict.fromkeys(new)]
        if self.registration and created:
            self.ledger.admit(PROVIDER, [p.public for p in created])
        for p in created:
            self.providers[p.label] = p
            if self.client.get(darc_key(p.policy_id)) is not None:
                continue  # a reopened ledger (db_dir) already holds this provider's policy
            txs.append(
                self.client.sign(
                    p.identity,
                    "darc.create",
                    p.policy_payload(
                        consumers,
                        price=self.price,
                        min_providers=self.min_providers,
                        max_jobs=self.max_jobs,
                        committees=[self.committee_id],
                    ),
                )
            )
        self._commit(txs)
        return [self.providers[str(lb)] for lb in labels]

    def set_policy(
        self,
        label: Any,
        consumers: Sequence[Consumer] | None = None,
        *,
        price: int | None = None,
        min_providers: int | None = None,
        max_jobs: int | None = None,
        privacy_budget: tuple[float, float] | None = None,
    ) -> None:
        """Evolve provider ``label``'s policy: grant exactly ``consumers`` (default: this
        committee's consumer), with new terms (None keeps the current one; the accepted
        committees are kept). ``consumers=[]`` revokes every grant. ``privacy_budget=(ε,
        δ)``: the differential privacy all the policy's jobs together may spend (what was
        already spent stays spent; the policy then refuses jobs without DP)."""
        p = self.provider(label)
        cur = self.client.get(darc_key(p.policy_id))
        if cur is None:
            raise LedgerError(f"provider {label!r} has no policy on the ledger")
        terms = cur["terms"]
        cs = [c.public for c in (self.consumer_list(consumers))]
        payload = p.policy_payload(
            cs,
            price=terms["price"] if price is None else price,
            min_providers=terms["min_providers"] if min_providers is None else min_providers,
            max_jobs=terms["max_jobs"] if max_jobs is None else max_jobs,
            version=cur["version"] + 1,
            committees=terms["committees"],
            privacy_budget=privacy_budget or terms.get("privacy_budget"),
        )
        self.client.execute(p.identity, "darc.evolve", payload)

    def revoke(self, label: Any) -> None:
        """Revoke every grant of provider ``label`` (later jobs exclude it)."""
        self.set_policy(label, [])

    def consumer_list(self, consumers: Sequence[Consumer] | None) -> list[Consumer]:
        return [self.consumer] if consumers is None else list(consumers)

    def new_consumer(self, name: str, balance: int = 0, *, admit: bool = True) -> Consumer:
        """A further consumer (no grant yet), funded with ``balance`` by the committee's bank
        (and, with the registration allow-list on, admitted unless ``admit`` is False)."""
        c = Consumer(name, Identity.from_seed(H(b"kaires/sim/consumer", name.encode())))
        if self.registration and admit:
            self.ledger.admit(CONSUMER, [c.public])
        if balance:
            self.client.execute(self.bank, "coin.transfer", {"to": c.public, "amount": balance})
        return c

    def balance(self, who: Consumer | Provider | str) -> int:
        pub = who if isinstance(who, str) else who.public
        return self.client.balance(pub)

    def _commit(self, txs: Sequence[Any]) -> list[Any]:
        if not txs:
            return []
        self.client.submit_many(txs)
        out = self.client.wait([t.id for t in txs], proof=False)
        for tx, c in zip(txs, out, strict=True):
            if not c.result.ok:
                raise LedgerError(f"{tx.kind} refused by the ledger: {c.result.reason}")
        return out

    def _commit_writes(self, txs: Sequence[Any]) -> None:
        """Commit the providers' writes; a refused write simply leaves its provider out."""
        if txs:
            self.client.submit_many(txs)
            self.client.wait([t.id for t in txs], proof=False)

    def _each(self, steps: Sequence[Callable[[], _T]]) -> list[_T]:
        """Run independent parties' steps on ``self.workers`` threads; their results in
        order. A step that raises: the first such step's exception (in order) is raised,
        as sequentially (the others have run: their reserved ledger counters stay unused,
        which the ledger allows)."""
        if self.workers <= 1 or len(steps) <= 1:
            return [step() for step in steps]
        with ThreadPoolExecutor(min(self.workers, len(steps))) as pool:
            return list(pool.map(lambda step: step(), steps))

    # -- one job ---------------------------------------------------------------------------
    def run_job(
        self,
        statistic: Any,
        data: Mapping[Any, tuple[Any, Any]],
        consumer: Consumer | None = None,
        progress: bool | str = False,
        dp: Any = None,
    ) -> JobResult:
        """Run the whole Kaires flow for ``statistic`` over ``{provider label: (X, y)}``.

        ``dp``: a :class:`kaires_fl.DP` target — the aggregators then add distributed
        Skellam noise calibrated to the statistic's proven sensitivity
        (:mod:`kaires_fl.privacy`), the job debits each provider's privacy budget, the
        aggregate is the noisy one and ``report["privacy"]`` says what was spent.

        Returns a :class:`JobResult`. Raises ``AccessDenied`` if the ledger refuses the
        job because the providers' policies do not allow it (no grant, revoked, expired,
        too few providers), ``LedgerError`` for other refusals (e.g. a consumer without
        the balance for the prices), ``ProtocolError`` if more parties fail than the
        committees tolerate.
        """
        # Each provider is its own machine: one BLAS thread each (on a shared 2-core box a
        # multi-threaded BLAS spin-waits and makes the providers' local sums 5–10× slower).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._run_job(statistic, data, consumer, progress, dp)

    def _run_job(
        self,
        statistic: Any,
        data: Mapping[Any, tuple[Any, Any]],
        consumer: Consumer | None,
        progress: bool | str,
        dp: Any = None,
    ) -> JobResult:
        consumer = consumer or self.consumer
        # The noise plan first: a statistic whose noise could wrap its field fails here.
        plan = plan_noise(dp, statistic, self.n_aggregators, self.threshold) if dp else None
        timings: dict[str, float] = {}
        clock = time.perf_counter()
        bar = _Progress(progress)

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - clock
            clock = now
            bar.step(name)

        labels = sorted((str(k) for k in data), key=str)
        if not labels:
            raise ConfigError("run_job needs data from at least one provider")
        by_label = {str(k): v for k, v in data.items()}
        providers = self.ensure_providers(labels)
        for j, p in enumerate(providers):
            p.fault = self.faults["provider"].get(j)
        lap("providers")
        # Encoding first: data outside the declared bounds fail before anything is escrowed.
        encoded = self._each([partial(p.measure, statistic, *by_label[p.label]) for p in providers])
        meas = {p.label: m for p, m in zip(providers, encoded, strict=True)}
        lap("encode")
        # 1. job request
        payload = consumer.job_payload(
            statistic,
            [p.policy_id for p in providers],
            self.committee_id,
            min_providers=self.min_providers,
            coordinator=self.coordinator.identity.public.hex(),
        )
        if dp is not None:
            payload["privacy"] = dp.to_obj()
        tx = self.client.sign(consumer.identity, "job.create", payload)
        self.coordinator.note("relay-tx", tx)
        try:
            self._commit([tx])
        except LedgerError as exc:
            if "balance" in str(exc):
                raise
            raise AccessDenied(
                f"the ledger refused the job: {exc}. Ask the providers for a grant (their "
                "'use' rule) or name providers whose policies allow this statistic"
            ) from exc
        job_id = tx.id
        job = self.client.get(job_key(job_id))
        assert job is not None  # committed just above
        label_of = {p.policy_id: p.label for p in providers}
        lap("job")
        # 2. sealed submissions (one block of writes)
        sealed = self._each(
            [
                partial(
                    self.providers[label_of[pid]].submit,
                    self.client,
                    job,
                    statistic,
                    meas[label_of[pid]],
                    self.lts_id,
                )
                for pid in job["providers"]
            ]
        )
        writes = [wtx for wtx, _ in sealed]
        subs = [sub for _, sub in sealed]
        lap("seal")
        for wtx in writes:
            self.coordinator.note("relay-tx", wtx)
        for s in subs:
            self.coordinator.note("submission", s)
        self._commit_writes(writes)
        subs, dropped = self.coordinator.admit(job, subs)
        lap("write")
        # 3. inputs closed
        itx = self.client.sign(
            consumer.identity, "calypso.inputs", consumer.inputs_payload(job_id, subs)
        )
        self.coordinator.note("relay-tx", itx)
        self._commit([itx])
        lap("inputs")
        # 4–6. key release, verification, aggregation, receipt
        out = self.coordinator.run(
            job_id, job["aggregators"], subs, lambda: self.coin_shares(job_id)
        )
        for k, v in out["timings"].items():
            timings[k] = timings.get(k, 0.0) + v
        clock = time.perf_counter()
        receipt = out["receipt"]
        assert receipt is not None  # the receipt tx committed
        r = receipt["receipt"]
        # 7. result
        aggregate = raw = None
        bad: list[int] = []
        if r["status"] == "done":
            raw, bad = consumer.open_result(job, receipt, out["shares"], statistic)
            if plan is not None:
                aggregate = statistic.decode_noisy(raw, int(r["num_measurements"]))
            else:
                aggregate = statistic.decode(raw, int(r["num_measurements"]))
        lap("result")
        bar.close()
        index = {k: i for i, k in enumerate(job["aggregators"])}
        faulty: dict[int, str] = {index[k]: v for k, v in r.get("faulty_reasons", {}).items()}
        for i, why in out["failures"].items():
            faulty.setdefault(i, why)
        for i in range(self.n_aggregators):
            if i not in out["results"]:
                faulty.setdefault(i, "no result")
        for i in bad:
            faulty.setdefault(i, "wrong or missing aggregate share")
        report = {
            "job": job_id,
            "status": r["status"],
            "why": r.get("why", ""),
            "accepted": [label_of[p] for p in r["accepted"]],
            "rejected": {
                label_of[p]: dropped.get(p) or r["reasons"].get(p, "rejected")
                for p in r["rejected"]
            },
            "excluded": {label_of.get(p, p): why for p, why in job["excluded"].items()},
            "faulty_aggregators": dict(sorted(faulty.items())),
            "faulty_trustees": dict(self._trustee_faults),
            "num_measurements": int(r["num_measurements"]),
            "ledger_height": self.client.height,
            "job_height": int(job["height"]),
            "receipt_height": int(receipt["height"]),
            "payments": dict(receipt.get("paid", {})),
            "timings": timings,
            "privacy": plan.report(statistic.noise_scale()) if plan is not None else None,
        }
        return JobResult(aggregate, report, receipt, raw)

    def coin_shares(self, job_id: str) -> dict[int, CoinShare | None]:
        ev = prove_entries(self.client, [job_key(job_id), inputs_key(job_id)])
        req = CoinRequest(self.lts_id, job_id, ev)
        self.coordinator.note("coin-request", req)
        ans = collect_answers(
            self.network, self.network.endpoint(self.coin_address), self.trustees.addresses, req
        )
        self.coordinator.note("coin-answers", ans)
        shares = {j: a if isinstance(a, CoinShare) else None for j, a in ans.items()}
        inputs = self.client.get(inputs_key(job_id))
        try:
            _, self._trustee_faults = combine_coin(
                shares,
                dict(enumerate(self.trustees.lts.public_shares)),
                self.trustees.lts.t,
                self.lts_id,
                job_id,
                inputs["root"] if inputs else "",
            )
        except KairesError as exc:  # the aggregators will fail the job with the reason
            self._trustee_faults = {-1: str(exc)}
        return shares

    def describe(self) -> dict[str, Any]:
        """What another process rebuilds this committee from: ``{"kind": "LocalCommittee",
        "params": <constructor parameters>, "pid": <creating process>}`` (JSON-ready)."""
        return {"kind": "LocalCommittee", "params": dict(self._params), "pid": os.getpid()}

    def close(self) -> None:
        self.ledger.close()


class _Progress:
    """A tqdm bar over the job's phases.

    ``True`` always shows it; ``"auto"`` shows it only on a terminal and only once the job
    has run for two seconds (so short fits and test runs stay quiet); ``False`` never.
    """

    PHASES = 7

    def __init__(self, enabled: bool | str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            auto = enabled == "auto"
            self.bar = tqdm(
                total=self.PHASES,
                desc="kaires job",
                leave=False,
                disable=None if auto else False,  # None: disabled when not a terminal
                delay=2.0 if auto else 0.0,
            )

    def step(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["JobResult", "LocalCommittee", "policy_id_for"]
