"""The committee interface: what the estimators and the Flower strategies use of a committee.

A *committee* runs Kaires jobs for its caller, who plays the client roles — the data
consumer (signs the job, opens the result sealed to its key), the untrusted coordinator
(relays transactions and sealed submissions, drives the rounds) and, in these front ends,
the simulated providers — while the ledger nodes, trustees and aggregators do the rest.
Two implementations:

- :class:`kaires_fl.simulation.LocalCommittee`: every role in this process on the
  in-memory transport (simulation, fault injection);
- the networked committee of :func:`kaires_fl.connect` (:mod:`kaires_fl.node.client`):
  the ledger, trustees and aggregators are separate node processes reached over the
  authenticated TCP transport; this process holds client keys only — no trustee share,
  no aggregator key, no ledger node key.

Code written against :class:`Committee` (``run_job``, ``close``, ``min_providers``, the
ledger client ``client`` for reads and audits, the consumer, the coordinator, the ids the
providers pin) runs unchanged on both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Committee", "default_committee", "default_workers"]


@runtime_checkable
class Committee(Protocol):
    """A committee that runs Kaires jobs (see the module docstring).

    Attributes
    ----------
    min_providers:
        The least number of distinct providers a job of this committee's policies needs.
    client:
        The caller's :class:`~kaires_fl.ledger.client.LedgerClient` (signs, submits, waits;
        reads with proofs; ``accesses`` and ``verify_chain`` for audits).
    consumer:
        The default consumer (:class:`~kaires_fl.roles.consumer.Consumer`) jobs are run for.
    coordinator:
        The untrusted :class:`~kaires_fl.aggregation.job.Coordinator` (in the caller's process).
    committee_id, lts_id:
        The registered aggregation committee and the trustees' long-term secret the jobs use.
    threshold:
        The aggregators' Shamir degree t.
    registration:
        Whether the ledger's provider/consumer allow-list is on.
    ledger:
        The ledger view (``genesis``; ``verify()`` audits the chain from genesis).
    aggregator_ids, aggregator_keys:
        The aggregators' Ed25519 and X25519 keys (objects with ``.public`` bytes), in
        committee order: what providers pin.
    network:
        The transport the caller's roles use (driven by ``run_until``).
    """

    min_providers: int
    client: Any
    consumer: Any
    coordinator: Any
    committee_id: str
    lts_id: str
    threshold: int
    registration: bool
    ledger: Any
    network: Any

    @property
    def aggregator_ids(self) -> Sequence[Any]: ...

    @property
    def aggregator_keys(self) -> Sequence[Any]: ...

    def run_job(
        self,
        statistic: Any,
        data: Mapping[Any, tuple[Any, Any]],
        consumer: Any = None,
        progress: bool | str = False,
        dp: Any = None,
    ) -> Any:
        """Run one job of ``statistic`` over ``{provider label: (X, y)}``; returns a
        :class:`~kaires_fl.simulation.JobResult` (``aggregate``, ``report``, ``receipt``).

        ``dp``: a :class:`kaires_fl.DP` ``(ε, δ)`` target: the aggregators add distributed
        noise (:mod:`kaires_fl.privacy`), the aggregate is the noisy one and
        ``report["privacy"]`` holds ``epsilon``, ``delta``, ``sigma`` (noise std of each
        output coordinate, decoded units; with per-block noise a list, one per block, and
        ``blocks`` their coordinates ``[start, stop)``), ``mechanism``, ``unit`` and
        ``sensitivity`` (None without ``dp``).

        Raises ``AccessDenied`` if the providers' policies refuse the job, ``LedgerError``
        for other refusals, ``ProtocolError`` if more parties fail than tolerated."""
        ...

    def ensure_providers(self, labels: Sequence[Any], grants: Sequence[Any] | None = None) -> Any:
        """The providers named ``labels`` (their policies created on first use)."""
        ...

    def coin_shares(self, job_id: str) -> Any:
        """The trustees' shares of job ``job_id``'s public coin (asked by the coordinator)."""
        ...

    def close(self) -> None:
        """Release what this object holds (in-process services, or the connections)."""
        ...


def default_committee() -> Committee:
    """A fresh in-process committee with the default sizes (4 + 4 + 4, t = 1) whose parties
    work side by side on :func:`default_workers` threads, as on their own machines."""
    from kaires_fl.simulation import LocalCommittee

    return LocalCommittee(workers=default_workers())


def default_workers() -> int:
    """Threads of the default committee: this process's CPUs, at most 4 (the default
    committee's aggregators or trustees); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))
