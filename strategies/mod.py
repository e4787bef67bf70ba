"""``kaires_mod``: the Flower client mod that turns a ClientApp into a Kaires data provider.

Add it to an unchanged ClientApp: ``ClientApp(mods=[kaires_mod])``. On a train (or query)
message carrying a Kaires phase it

1. ``enrol``: pins the ledger and committee it is shown (unless its config names them),
   and replies with its public key and its data policy, signed by itself (the ServerApp
   relays it to the ledger) — the user's handler is not called;
2. ``job``: verifies the job offline (:meth:`FlowerProvider.check_job`: genesis, committee,
   state proofs, its own policy), runs the user's handler, turns its reply into the job's
   measurements, and replies with its CALYPSO write and sealed submission **instead of**
   the handler's arrays and metrics. For ``"model_update"`` jobs (KairesFedAvg) the
   measurement is the clipped update ``trained − global`` weighted by the provider itself
   with w = min(n, W)/W, and w, both proven (n from the handler's MetricRecord, key
   ``num-examples``; n stays on the client), two flag bits (clipped, capped) and the
   train metrics the strategy declared, each a proven-bounded weighted coordinate of the
   same sealed measurement (plaintext metrics are never sent); for a statistic job
   (KairesStatsStrategy) the
   handler returns its local data as an ArrayRecord with arrays ``"X"`` and ``"y"``.

Any other train or query message is refused: a Kaires provider never sends plaintext
updates. A refusal is a Flower error reply whose reason says why (untrusted ledger, bad
proof, excluded by the ledger, not granted by the provider's own policy, …). Evaluate
messages pass through unchanged (they carry metrics, not training data).

The cryptography is imported on the first Kaires message, not when the ClientApp is
loaded, so it stays off the Ray workers' start-up path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from . import wire

#: Flower error code of a Kaires refusal (Flower's MOD_FAILED_PRECONDITION).
REFUSED = 5

PolicyFn = Callable[[Context], Any]
FaultFn = Callable[[Context], str | None]


def _config(msg: Message) -> ConfigRecord | None:
    recs = msg.content.config_records
    if "config" in recs:
        return recs["config"]
    for rec in recs.values():
        if wire.PHASE in rec:
            return rec
    return None


def _refuse(msg: Message, reason: str) -> Message:
    return Message(Error(code=REFUSED, reason=f"kaires_mod refused: {reason}"), reply_to=msg)


def make_kaires_mod(
    policy: PolicyFn | None = None, fault: FaultFn | None = None, simulation: bool = False
) -> Callable[[Message, Context, ClientAppCallable], Message]:
    """A ``kaires_mod`` with a custom provider policy and (for simulation) fault.

    Parameters
    ----------
    simulation:
        Allow the simulation-only conveniences (trust on first use of the ledger, committee
        and LTS; keys derived from the public ``kaires-seed``; granting the enrolling
        consumer), each logged as a warning; also enabled by ``kaires-simulation = true``
        in the node config. Off: a node without ``kaires-key``, trust anchors and
        ``kaires-grants`` in its node config refuses, saying which setting to add
        (:mod:`kaires_fl.strategies.provider`).
    policy:
        ``context -> ProviderPolicy`` (default: from the node/run config, see
        :mod:`kaires_fl.strategies.provider`).
    fault:
        ``context -> None | "over_norm" | "underweight" | "batch_inflation" |
        "out_of_range" | "inconsistent_shares" | "bad_proof" | "inflated_metric"``: a
        deliberately malicious provider, for tests and demos
        (:data:`~kaires_fl.strategies.provider.FLOWER_FAULTS`).
    """

    def mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        kind = msg.metadata.message_type.split(".")[0]
        if kind == "evaluate":
            return call_next(msg, context)
        config = _config(msg)
        phase = None if config is None else config.get(wire.PHASE)
        if phase not in (wire.PHASE_ENROL, wire.PHASE_JOB):
            return _refuse(
                msg,
                f"a {kind} message without a Kaires job: this provider only answers jobs "
                "committed on the ledger (use KairesFedAvg / KairesStatsStrategy)",
            )
        from kaires_fl.errors import KairesError

        from .provider import FlowerProvider

        try:
            provider = FlowerProvider.from_context(
                context,
                None if policy is None else policy(context),
                None if fault is None else fault(context),
                simulation,
            )
            assert config is not None  # phase was read from it
            if phase == wire.PHASE_ENROL:
                return _reply(msg, provider.enrol(context, config))
            offer = provider.check_job(context, config)
        except KairesError as exc:
            return _refuse(msg, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # service boundary: the ServerApp's bytes are untrusted
            return _refuse(msg, f"malformed Kaires message ({type(exc).__name__}: {exc})")
        out = call_next(msg, context)
        if out.has_error():
            return out
        try:
            meas = _measurements(provider, offer, msg, out)
            record = provider.seal(offer, meas)
        except KairesError as exc:
            return _refuse(msg, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # e.g. arrays from the ServerApp that do not fit the reply
            return _refuse(msg, f"cannot encode the reply ({type(exc).__name__}: {exc})")
        return _reply(msg, record)

    mod.__name__ = "kaires_mod"
    mod.__doc__ = __doc__
    return mod


def _reply(msg: Message, record: dict[str, Any]) -> Message:
    """The Kaires reply: only the record (no metrics: a model update's weight is private,
    proven inside the measurement)."""
    return Message(RecordDict({wire.REPLY: ConfigRecord(record)}), reply_to=msg)


def _measurements(provider: Any, offer: Any, msg: Message, out: Message) -> Any:
    """The job's measurements from the handler's reply (see the module docstring)."""
    import numpy as np

    from kaires_fl.aggregation.job import job_statistic
    from kaires_fl.errors import ConfigError

    from .update import (
        ModelUpdateStats,
        flatten,
        over_norm_measurements,
        underweight_measurements,
    )

    statistic = job_statistic(offer.job)
    arrays = list(out.content.array_records.values())
    metrics = list(out.content.metric_records.values())
    if isinstance(statistic, ModelUpdateStats):
        sent = list(msg.content.array_records.values())
        if len(arrays) != 1 or len(sent) != 1:
            raise ConfigError(
                "a model_update job needs exactly one ArrayRecord in the train message and in "
                "the handler's reply"
            )
        config = _config(msg)  # the strategy's configrecord_key, not always "config"
        key = "num-examples" if config is None else str(config.get(wire.WEIGHT_KEY, "num-examples"))
        n = None
        values: dict[str, Any] = {}  # the declared train metrics are read from here
        for m in metrics:
            values.update(m)
            if key in m and isinstance(m[key], int | float):
                n = float(m[key])  # type: ignore[arg-type]
        if n is None:
            raise ConfigError(f"the train handler's reply has no {key!r} metric (the weight)")
        delta = flatten(arrays[0].to_numpy_ndarrays()) - flatten(sent[0].to_numpy_ndarrays())
        if provider.fault == "over_norm":
            return over_norm_measurements(statistic)
        if provider.fault == "underweight":
            return underweight_measurements(statistic, delta)
        if provider.fault == "inflated_metric":
            from .update import inflated_metric_measurements

            return inflated_metric_measurements(statistic, delta, n, values)
        meas = statistic.measurements(delta, n, values)
        if provider.fault == "batch_inflation":
            from .provider import INFLATED_BATCH

            return np.repeat(meas, INFLATED_BATCH, axis=0)
        return meas
    if len(arrays) != 1 or "X" not in arrays[0]:
        raise ConfigError(
            f"a {statistic.kind} job needs the handler to reply with an ArrayRecord holding "
            "'X' (and 'y' for regression): the provider's local rows"
        )
    rec = arrays[0]
    X = rec["X"].numpy()
    y = rec["y"].numpy() if "y" in rec else None
    meas = statistic.measurements(X, y)
    if provider.fault == "over_norm":
        meas = np.asarray(meas).copy()
        meas[:, 0] = statistic.field.add(meas[:, 0], statistic.field.elements(2))
    return meas


#: The default mod: provider identity, policy and trust anchors from the node config
#: (simulation-only conveniences refused unless ``kaires-simulation = true`` there).
kaires_mod = make_kaires_mod()

__all__ = ["REFUSED", "kaires_mod", "make_kaires_mod"]
