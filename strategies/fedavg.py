"""``KairesFedAvg``: Flower's FedAvg where the ServerApp only ever receives the aggregate.

A drop-in subclass of :class:`flwr.serverapp.strategy.FedAvg` (same constructor
arguments, sampling, minimum nodes, ``start(grid, initial_arrays, num_rounds, ...)``,
weighting by ``num-examples``), plus the required weight cap ``num_examples_cap``. Use it
with ``ClientApp(mods=[kaires_mod])``.

What changes (one round = one Kaires job, protocol.md):

- ``start`` first **enrols** the nodes: each one's ``kaires_mod`` checks the ledger, the
  committee and the LTS against its node config (or pins them, in simulation only) and
  returns its policy, signed by itself, and its signature of a fresh per-node challenge;
  the ServerApp checks that signature and relays the policy.
- ``configure_train`` commits a ``"model_update"`` job for the sampled providers on the
  ledger (the ledger checks every provider's policy) and sends each node the global
  model plus the job, its state proofs, the genesis block and the committee description.
- The clients reply with sealed submissions (:mod:`kaires_fl.strategies.update`: each
  client clips its update, applies its own weight w = min(n, W)/W and proves, on shares,
  w ∈ [0, 1] and ‖v‖ ≤ w; fixed point, Shamir-shared, sealed to the aggregators).
- ``aggregate_train`` relays them to the committee; the aggregators verify the proofs on
  shares (an over-norm or malformed update is rejected, not averaged in), sum the accepted
  ones and seal the sum to the consumer; the ServerApp opens only that sum, which carries
  both C·Σ v and Σ w, and computes

      global + C·Σ v / Σ w      (v, w of the accepted providers)

  which is FedAvg's weighted average of the updates when no update exceeds ``clip_norm``
  and no ``num-examples`` exceeds the weight cap W (``num_examples_cap``, configured by
  the consumer: never derived from what clients claim). A client lying about its
  examples gets at most weight 1.

Train metrics: per-client metrics are never sent in plaintext. The metrics declared with
``train_metrics={"loss": (0.0, 10.0), ...}`` (name → bounds) ride inside each sealed,
proven measurement as weighted fixed-point coordinates (``w·t``, t the value clipped to
its bounds and normalised, proven in [0, w]); the round's MetricRecord (FedAvg's
``train_metrics_clientapp``) reports their weighted averages over the accepted
providers, as FedAvg's default aggregation does with ``num-examples`` (exactly so when no
client exceeds W; within 2^-f·(high − low) per client of fixed-point rounding), plus the
counts ``kaires-sampled``, ``kaires-accepted``, ``kaires-rejected``, ``kaires-refused``,
``kaires-clipped`` (updates scaled down to ``clip_norm``) and ``kaires-capped`` (clients
whose num-examples exceeded W). Clipped or capped updates raise a
:class:`~kaires_fl.errors.KairesWarning` naming how many and why. ``kaires_rounds[r]``
keeps each round's small facts: its job entry, its
:class:`~kaires_fl.strategies.committee.RoundResult` (status, accepted, rejected, refused,
timings; its ``aggregate`` without the summed update, which became the new global model:
Σ w, the metrics and flag counts), the statistic (one object shared by the rounds of one
model size) and the nodes' refusal reasons — no submission, share or message, so a
ServerApp running thousands of rounds keeps a few dozen objects per round.

Differential privacy (``dp=DP(ε, δ)``): each round's job is committed with that privacy, so
the committee's aggregators add Skellam noise to the summed update (and to Σ w and the
metrics) calibrated to one client's proven contribution (‖v‖ ≤ w ≤ 1, times ``clip_norm``)
before the ServerApp opens it; t colluding aggregators cannot remove it. The new global
model divides the noisy sum by Σ w post-processed (:meth:`KairesFedAvg.dp_denominator`:
the public accepted count with ``num_examples_cap=1``, recommended with ``dp``); the
clipped and capped counts are noisy too (rounded, clamped to the accepted). The ledger
debits each included client's privacy budget by (ε, δ) per round. Each round's metrics carry
``kaires-epsilon`` and ``kaires-delta``: the (ε, δ) of all rounds so far (Rényi
composition of the rounds' Skellam releases, converted at the δ each round was calibrated
at, plus every round's clipping-tail probability; tighter than the ledger's per-round sum).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from logging import ERROR, INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import sample_nodes
from flwr.supercore import log

from . import wire

#: What a ClientApp without ``kaires_mod`` is told (a half-converted app).
NO_MOD_HINT = (
    "the ClientApp must use kaires_mod: ClientApp(mods=[kaires_mod]) "
    "(from kaires_fl.strategies import kaires_mod)"
)


def _short(text: Any, most: int = 160) -> str:
    """``text`` on one line, at most ``most`` characters (a reason may embed a traceback)."""
    one = " ".join(str(text).split())
    return one if len(one) <= most else one[: most - 1] + "…"


def auto_frac_bits(length: int, most: int = 20) -> int:
    """:func:`kaires_fl.strategies.update.auto_frac_bits` (imported on use: this module
    keeps Kaires' cryptography off the import path)."""
    from .update import auto_frac_bits as _auto

    return _auto(length, most)


class KairesFlowerBase:
    """Enrolment, job messages and committee plumbing shared by the Kaires strategies."""

    configrecord_key: str
    arrayrecord_key: str
    min_available_nodes: int

    def _init_kaires(self, committee: Any, enrol_timeout: float, dp: Any = None) -> None:
        self._committee = committee
        self.dp = dp
        self.enrol_timeout = enrol_timeout
        self.enrolled: dict[int, tuple[str, str]] = {}  # node id → (policy id, public key)
        self.enrol_refusals: dict[int, str] = {}
        self.kaires_rounds: dict[int, dict[str, Any]] = {}
        self.enrol_message_type: str = MessageType.TRAIN

    def committee_summary(self) -> str:
        """One line describing the committee (no object address)."""
        from .committee import describe_committee

        return describe_committee(self._committee)

    @property
    def committee(self) -> Any:
        """The committee connection (a fresh in-process committee unless one was given)."""
        if self._committee is None:
            from .committee import CommitteeConnection

            self._committee = CommitteeConnection()
        elif not hasattr(self._committee, "commit_job"):
            from .committee import CommitteeConnection

            self._committee = CommitteeConnection(self._committee)
        return self._committee

    def enrol_nodes(self, grid: Grid, node_ids: Iterable[int]) -> None:
        """Enrolment exchange with the nodes not enrolled yet (module docstring)."""
        todo = [n for n in node_ids if n not in self.enrolled]
        if not todo:
            return
        import secrets

        if self._committee is None or not hasattr(self._committee, "commit_job"):
            log(INFO, "kaires: connecting to the committee (%s)", self.committee_summary())
        conn = self.committee
        log(INFO, "kaires: enrolling %s node(s) as providers", len(todo))
        challenges = {n: secrets.token_bytes(32) for n in todo}
        msgs = [
            Message(
                content=RecordDict(
                    {
                        self.configrecord_key: ConfigRecord(
                            {
                                wire.PHASE: wire.PHASE_ENROL,
                                wire.GENESIS: conn.genesis_bytes,
                                wire.CONSUMER: conn.consumer_public,
                                wire.COMMITTEE: conn.description_bytes,
                                wire.CHALLENGE: challenges[n],
                            }
                        )
                    }
                ),
                message_type=self.enrol_message_type,
                dst_node_id=n,
            )
            for n in todo
        ]
        replies = list(grid.send_and_receive(msgs, timeout=self.enrol_timeout))
        records: dict[int, Any] = {}
        for r in replies:
            node = r.metadata.src_node_id
            if node not in challenges or node in records:
                continue  # not asked, or a second reply: ignored
            if r.has_error() and "kaires_mod refused" not in str(r.error.reason):
                # The ClientApp failed on the enrolment message with no kaires_mod answering
                # it (a half-converted app): the hint first, the handler's error shortened.
                self.enrol_refusals[node] = (
                    f"{NO_MOD_HINT} (the ClientApp's own error: {_short(r.error.reason, 100)})"
                )
            elif r.has_error():
                self.enrol_refusals[node] = str(r.error.reason)
            elif wire.REPLY in r.content.config_records:
                records[node] = r.content.config_records[wire.REPLY]
            else:
                self.enrol_refusals[node] = f"no Kaires enrolment in the reply: {NO_MOD_HINT}"
        taken = {pid for pid, _ in self.enrolled.values()}
        done = conn.enrol(records, challenges, taken)
        self.enrol_refusals.update(getattr(conn, "enrol_errors", {}))
        for node, pid in done.items():
            self.enrolled[node] = (pid, wire.decode_enrolment(records[node][wire.ENROLMENT]).public)
            self.enrol_refusals.pop(node, None)
        for node, why in self.enrol_refusals.items():
            log(WARNING, "kaires: node %s not enrolled: %s", node, _short(why))
        log(
            INFO,
            "kaires: %s node(s) enrolled (%s in total), %s refused",
            len(done),
            len(self.enrolled),
            len(self.enrol_refusals),
        )
        if not self.enrolled:
            from kaires_fl.errors import ConfigError

            reasons = sorted({_short(w, 200) for w in self.enrol_refusals.values()})
            message = (
                f"no node enrolled as a Kaires provider ({len(self.enrol_refusals)} refused); "
                f"{reasons[0] if len(reasons) == 1 else 'reasons: ' + ' | '.join(reasons[:3])}"
            )
            log(ERROR, "kaires: %s", message)  # the last line before any Ray traceback
            raise ConfigError(message)

    def job_messages(
        self,
        statistic: Any,
        node_ids: list[int],
        base: RecordDict,
        message_type: str,
        round_key: int,
    ) -> list[Message]:
        """Commit a job for the sampled nodes and build one message per node."""
        conn = self.committee
        nodes = [n for n in node_ids if n in self.enrolled]
        pids = {self.enrolled[n][0]: self.enrolled[n][1] for n in nodes}
        t0 = time.perf_counter()
        from kaires_fl.errors import KairesError

        try:
            if getattr(self, "dp", None) is None:
                job = conn.commit_job(statistic, list(pids))
            else:
                job = conn.commit_job(statistic, list(pids), privacy=self.dp.to_obj())
        except KairesError as exc:  # refused (no grant, balance) or the ledger failed
            log(WARNING, "kaires: round %s has no job: %s", round_key, exc)
            self.kaires_rounds[round_key] = {"job": None, "why": str(exc)}
            return []
        proofs = conn.job_proofs(job["id"], pids)
        self.kaires_rounds[round_key] = {
            "job": job,
            "statistic": statistic,
            "nodes": {n: self.enrolled[n][0] for n in nodes},
            "timings": {"commit_job": time.perf_counter() - t0},
        }
        if job["excluded"]:
            log(INFO, "kaires: the ledger excluded %s", job["excluded"])
        common = {
            wire.PHASE: wire.PHASE_JOB,
            wire.GENESIS: conn.genesis_bytes,
            wire.COMMITTEE: conn.description_bytes,
            wire.JOB: job["id"],
        }
        msgs = []
        for n in nodes:
            cfg = ConfigRecord(dict(base.config_records[self.configrecord_key]))
            cfg.update(common)
            cfg[wire.PROOFS] = proofs[self.enrolled[n][0]]
            content = RecordDict({k: v for k, v in base.items() if k != self.configrecord_key})
            content[self.configrecord_key] = cfg
            msgs.append(Message(content=content, message_type=message_type, dst_node_id=n))
        return msgs

    def aggregate_job(self, round_key: int, statistic: Any, subs: Any) -> Any:
        """The committee's RoundResult for this round's job; a committee failure beyond
        its tolerance fails the round (recorded, logged) instead of the whole run."""
        from kaires_fl.errors import KairesError

        from .committee import RoundResult

        info = self.kaires_rounds[round_key]
        try:
            res = self.committee.aggregate(info["job"], statistic, subs)
        except KairesError as exc:
            log(WARNING, "kaires: round %s failed in the committee: %s", round_key, exc)
            res = RoundResult(info["job"]["id"], "failed", None, [], {}, {}, {}, 0, str(exc))
        info["result"] = res
        return res

    def collect(
        self, round_key: int, replies: Iterable[Message]
    ) -> tuple[dict[str, tuple[bytes, Any]], dict[str, Any], dict[int, str]]:
        """Sealed submissions (policy id → (write, submission bytes or record fields)),
        the replies' metrics by policy id, and the nodes' refusal reasons."""
        info = self.kaires_rounds[round_key]
        subs: dict[str, tuple[bytes, Any]] = {}
        metrics: dict[str, Any] = {}
        refusals: dict[int, str] = {}
        for r in replies:
            node = r.metadata.src_node_id
            if r.has_error():
                refusals[node] = str(r.error.reason)
                log(INFO, "\t> node %s sent nothing usable: %s", node, _short(r.error.reason))
                continue
            rec = r.content.config_records.get(wire.REPLY)
            pid = info["nodes"].get(node)
            if pid in subs:  # one node per policy (enrolment): a second reply is dropped
                refusals[node] = "a second reply for the same policy: dropped"
                continue
            if rec is None or pid is None or rec.get("policy") != pid:
                refusals[node] = "reply without a sealed submission for its policy"
                continue
            if r.content.array_records:
                # A Kaires reply carries no plaintext arrays; one that does is dropped unread.
                refusals[node] = "reply carries plaintext arrays: dropped"
                continue
            wtx = rec.get("write-tx")
            fields = {k: rec.get(k) for k in (wire.SUBMISSION, wire.MEAS_PARTS, wire.PROOF_PARTS)}
            if not isinstance(wtx, bytes) or not isinstance(fields[wire.SUBMISSION], bytes):
                refusals[node] = "reply without a sealed submission for its policy"
                continue
            # The parts as separate bytes values (wire.submission_record), or one blob.
            sub = fields if fields[wire.MEAS_PARTS] is not None else fields[wire.SUBMISSION]
            subs[pid] = (wtx, sub)
            metrics[pid] = next(iter(r.content.metric_records.values()), None)
        info["refusals"] = refusals
        return subs, metrics, refusals


class KairesFedAvg(KairesFlowerBase, FedAvg):
    """FedAvg through Kaires (module docstring). FedAvg's arguments, plus:

    Parameters
    ----------
    committee:
        A :class:`~kaires_fl.strategies.committee.CommitteeConnection` or a
        :class:`~kaires_fl.committee.Committee` (a ``LocalCommittee``, or a deployed one
        from ``kaires_fl.connect("group.toml")``; default: a fresh local committee).
    clip_norm:
        C: every update is scaled to ‖Δ‖₂ ≤ C before it is proven bounded.
    num_examples_cap:
        W (required): a provider's weight is min(num-examples, W)/W, applied and proven by
        the provider itself. Use the largest number of examples one client may count
        for (``1``: every client with at least one example weighs the same). It is never
        derived from clients' claims (issue 9, #12).
    frac_bits:
        Fixed-point fractional bits of the update (default 20; with ``norm_proof="bits"``
        the most the field allows, at most 20).
    norm_proof:
        How a client proves its update's norm: ``"pine"`` (default, ≈ 1 field element per
        parameter, wraparound checks) or ``"bits"`` (f + 1 bits per parameter; see
        ``ModelUpdateStats``).
    train_metrics:
        The clients' train metrics to aggregate, ``{name: (low, high)}``: each client's
        value is clipped to its declared bounds and aggregated inside its sealed, proven
        measurement; the round reports the weighted average (module docstring). A client
        whose reply lacks a declared metric is refused for that round.
    dp:
        ``kaires_fl.DP(ε, δ)``: every round's aggregate is released (ε, δ)-differentially
        private for each client, with the noise added by the committee, not the ServerApp;
        the metrics carry the cumulative ``kaires-epsilon`` (module docstring). None:
        the exact aggregate.
    """

    def __init__(
        self,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        weighted_by_key: str = "num-examples",
        arrayrecord_key: str = "arrays",
        configrecord_key: str = "config",
        train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord] | None = None,
        *,
        committee: Any | None = None,
        clip_norm: float = 10.0,
        num_examples_cap: float | None = None,
        frac_bits: int | None = None,
        train_metrics: Mapping[str, tuple[float, float]] | None = None,
        enrol_timeout: float = 3600,
        norm_proof: str = "pine",
        dp: Any = None,
    ) -> None:
        if train_metrics_aggr_fn is not None:
            from kaires_fl.errors import ConfigError

            raise ConfigError(
                "KairesFedAvg cannot call train_metrics_aggr_fn: the ServerApp never sees a "
                "client's train metrics. Declare them with train_metrics={name: (low, high)}: "
                "their weighted averages are aggregated inside the sealed, proven updates"
            )
        super().__init__(
            fraction_train,
            fraction_evaluate,
            min_train_nodes,
            min_evaluate_nodes,
            min_available_nodes,
            weighted_by_key,
            arrayrecord_key,
            configrecord_key,
            train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn,
        )
        from kaires_fl.privacy import DP

        if dp is not None and not isinstance(dp, DP):
            from kaires_fl.errors import ConfigError

            raise ConfigError(f"dp must be a kaires_fl.DP(epsilon, delta) or None, got {dp!r}")
        self._init_kaires(committee, enrol_timeout, dp)
        #: The noise plan of every committed DP round (kaires_fl.privacy.mechanism).
        self.dp_rounds: list[Any] = []
        if not (clip_norm > 0 and math.isfinite(clip_norm)):
            from kaires_fl.errors import ConfigError

            raise ConfigError(f"clip_norm must be positive and finite, got {clip_norm}")
        self.clip_norm = float(clip_norm)
        cap = float("nan") if num_examples_cap is None else float(num_examples_cap)
        if not (cap > 0 and math.isfinite(cap)):
            from kaires_fl.errors import ConfigError

            raise ConfigError(
                f"KairesFedAvg weights clients by {weighted_by_key!r}: set num_examples_cap=W, "
                "the most examples one client may count for (its weight is min(n, W)/W, "
                "proven in [0, 1]; 1 weighs every client the same); W is never derived from "
                f"the clients' claims. Got {num_examples_cap!r}"
            )
        self.num_examples_cap = cap
        self.frac_bits = frac_bits
        from .update import NORM_PROOFS, _check_metrics

        if norm_proof not in NORM_PROOFS:
            from kaires_fl.errors import ConfigError

            raise ConfigError(f"norm_proof must be one of {NORM_PROOFS}, got {norm_proof!r}")
        self.norm_proof = norm_proof

        self.train_metrics = _check_metrics(
            [(k, *bounds) for k, bounds in (train_metrics or {}).items()]
        )
        self._current: ArrayRecord | None = None
        self._statistic: tuple[tuple[Any, ...], Any] | None = None

    def __repr__(self) -> str:
        return (
            f"KairesFedAvg(clip_norm={self.clip_norm}, num_examples_cap="
            f"{self.num_examples_cap:g}, train_metrics={[m[0] for m in self.train_metrics]}, "
            f"committee: {self.committee_summary()})"
        )

    def summary(self) -> None:
        super().summary()
        log(
            INFO,
            "\t└──> Kaires: clip_norm %s, num_examples_cap %g, train metrics %s",
            self.clip_norm,
            self.num_examples_cap,
            {name: (lo, hi) for name, lo, hi in self.train_metrics} or "none",
        )
        log(INFO, "\t└──> Kaires committee: %s", self.committee_summary())

    def start(self, grid: Grid, initial_arrays: ArrayRecord, *args: Any, **kwargs: Any) -> Any:
        """FedAvg's ``start``, after enrolling the connected nodes as Kaires providers."""
        self.enrol_nodes(grid, grid.get_node_ids())
        return super().start(grid, initial_arrays, *args, **kwargs)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample as FedAvg does, commit this round's job, send each node its proofs."""
        if self.fraction_train == 0.0:
            return []
        from .update import ModelUpdateStats

        num_nodes = int(len(list(grid.get_node_ids())) * self.fraction_train)
        sample_size = max(num_nodes, self.min_train_nodes)
        node_ids, _ = sample_nodes(grid, self.min_available_nodes, sample_size)
        self.enrol_nodes(grid, node_ids)
        config["server-round"] = server_round
        config[wire.WEIGHT_KEY] = self.weighted_by_key
        length = sum(int(np.prod(a.shape)) for a in arrays.values())
        key: tuple[Any, ...] = (length, self.clip_norm, self.num_examples_cap, self.frac_bits)
        key += (tuple(self.train_metrics), self.norm_proof)
        if self._statistic is None or self._statistic[0] != key:
            stat = ModelUpdateStats(
                length,
                clip_norm=self.clip_norm,
                weight_cap=self.num_examples_cap,
                frac_bits=self.frac_bits,
                metrics=self.train_metrics,
                norm_proof=self.norm_proof,
            )
            self._statistic = (key, stat)
        stat = self._statistic[1]  # the rounds of one model size share it (and their records)
        self._current = arrays
        base = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        msgs = self.job_messages(stat, node_ids, base, MessageType.TRAIN, server_round)
        log(
            INFO,
            "kaires: round %s sampled %s node(s), job for %s",
            server_round,
            len(node_ids),
            len(msgs),
        )
        return msgs

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate through the committee; the ServerApp opens only the sum."""
        replies = list(replies)
        info = self.kaires_rounds.get(server_round)
        if info is None or info.get("job") is None or self._current is None:
            return None, None
        subs, _, refusals = self.collect(server_round, replies)
        stat = info["statistic"]
        res = self.aggregate_job(server_round, stat, subs)
        agg = res.aggregate
        # The record keeps the small facts: the summed update becomes the new global model
        # (returned below), it is not kept once per round.
        info["result"] = dataclasses.replace(
            res, aggregate=None if agg is None else {k: v for k, v in agg.items() if k != "sum"}
        )
        counts = {
            "kaires-sampled": len(info.get("nodes", {})),
            "kaires-accepted": len(res.accepted),
            "kaires-rejected": len(res.rejected),
            "kaires-refused": len(res.refused) + len(refusals),
            "kaires-clipped": 0 if agg is None else self.flag_count(agg, "clipped", res),
            "kaires-capped": 0 if agg is None else self.flag_count(agg, "capped", res),
        }
        log(
            INFO,
            "kaires: round %s: %s sampled, %s accepted, %s rejected, %s refused, %s clipped, "
            "%s capped",
            server_round,
            *counts.values(),
        )
        for who, why in {**res.rejected, **res.refused, **refusals}.items():
            log(INFO, "\t> %s: %s", who, _short(why))
        if res.faulty_aggregators:
            log(WARNING, "kaires: faulty aggregators %s", res.faulty_aggregators)
        self.warn_round(server_round, counts)
        metrics_out = MetricRecord(dict(counts))
        if self.dp is not None:
            from kaires_fl.errors import KairesError

            try:
                eps, delta = self.account_round(info["job"], stat)
                metrics_out["kaires-epsilon"] = eps
                metrics_out["kaires-delta"] = delta
            except KairesError as exc:  # no noise plan: the committee released nothing
                log(WARNING, "kaires: round %s has no privacy accounting: %s", server_round, exc)
        # Σ w comes from the aggregate itself (proven per provider), not from claims; with
        # dp it is noisy, like the sum (a non-positive noisy Σ w releases no update).
        total_w = 0.0 if agg is None else float(agg["weight"])
        if agg is not None and self.dp is not None:
            total_w = self.dp_denominator(total_w, len(res.accepted))
        if agg is None or not total_w > 0:
            log(WARNING, "kaires: round %s produced no aggregate: %s", server_round, res.why)
            return None, metrics_out
        for name, value in agg.get("metrics", {}).items():
            metrics_out[name] = float(value)
        from .update import flatten, unflatten

        current = self._current
        keys = list(current.keys())
        olds = [current[k].numpy() for k in keys]
        new = flatten(olds) + np.asarray(res.aggregate["sum"]) / total_w
        arrays = ArrayRecord(
            {k: Array(np.asarray(a)) for k, a in zip(keys, unflatten(new, olds), strict=True)}
        )
        return arrays, metrics_out

    def flag_count(self, agg: Mapping[str, Any], name: str, res: Any) -> int:
        """How many accepted clients set flag ``name`` (clipped, capped); with ``dp`` the
        released count is noisy and is rounded and clamped to [0, accepted]."""
        value = float(agg.get(name, 0))
        if self.dp is None:
            return int(value)
        return int(min(max(round(value), 0), len(res.accepted)))

    def dp_denominator(self, noisy_weight: float, accepted: int) -> float:
        """Σ w of a round with differential privacy, post-processed.

        The released Σ w carries noise like every coordinate, but each accepted client's
        w is proven in [0, 1] and the number accepted is public: with ``num_examples_cap
        = 1`` (recommended with ``dp``) every honest client's w is 1 and Σ w is taken as
        the accepted count; otherwise the noisy Σ w is clamped to [0, accepted].
        """
        if self.num_examples_cap == 1.0:
            return float(accepted)
        return min(max(noisy_weight, 0.0), float(accepted))

    def account_round(self, job: Mapping[str, Any], statistic: Any) -> tuple[float, float]:
        """Record this round's committed DP job; returns the (ε, δ) of all rounds so far.

        Each round's noise plan is calibrated at δ_c = (1 − TAIL_SHARE)·δ and loses its
        clipping tail on top (:func:`kaires_fl.privacy.mechanism.plan_noise`). The rounds
        of one plan compose in Rényi DP (``NoisePlan.epsilon(δ_c, rounds)``); plans that
        differ (e.g. a changed model size) add their ε. δ is δ_c plus every round's tail.
        Post: after one round, (ε, δ) ≤ ``dp``.
        """
        from kaires_fl.aggregation.job import job_noise_plan
        from kaires_fl.privacy.mechanism import TAIL_SHARE

        plan = job_noise_plan(job, statistic)
        if plan is None or self.dp is None:
            raise ValueError("account_round needs a job with differential privacy")
        self.dp_rounds.append(plan)
        delta_c = self.dp.delta * (1 - TAIL_SHARE)
        plans: dict[tuple[Any, ...], list[Any]] = {}
        for p in self.dp_rounds:
            plans.setdefault((p.sigma, p.l2, p.l1, p.length, p.bits), []).append(p)
        eps = sum(group[0].epsilon(delta_c, len(group)) for group in plans.values())
        return float(eps), delta_c + sum(p.tail for p in self.dp_rounds)

    def warn_round(self, server_round: int, counts: Mapping[str, int]) -> None:
        """A :class:`~kaires_fl.errors.KairesWarning` per silent change of the result:
        clipped updates, capped weights, rejected providers."""
        import warnings

        from kaires_fl.errors import KairesWarning

        n = counts["kaires-accepted"]
        if counts["kaires-clipped"]:
            warnings.warn(
                f"round {server_round}: {counts['kaires-clipped']} of {n} accepted updates were "
                f"clipped (their norm exceeded clip_norm={self.clip_norm:g}; each was scaled "
                "down to it). Raise clip_norm if that is not intended.",
                KairesWarning,
                stacklevel=2,
            )
        if counts["kaires-capped"]:
            warnings.warn(
                f"round {server_round}: {counts['kaires-capped']} of {n} accepted clients "
                f"reported more examples than num_examples_cap={self.num_examples_cap:g}; "
                "each counts as that many. Raise num_examples_cap if that is not intended.",
                KairesWarning,
                stacklevel=2,
            )
        if counts["kaires-rejected"]:
            warnings.warn(
                f"round {server_round}: {counts['kaires-rejected']} provider(s) rejected by "
                "the committee (their proofs failed: over-norm or malformed updates); "
                "the round averages the accepted ones",
                KairesWarning,
                stacklevel=2,
            )


__all__ = ["KairesFedAvg", "auto_frac_bits"]
