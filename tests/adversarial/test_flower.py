"""Adversarial tests of the Flower layer (issue 9: #12, #6, enrolment replay, TOFU).

Each attacker uses only its role's capabilities: a Flower client runs its own ClientApp
(its own keys, whatever it puts in its replies: the fault hooks of ``make_kaires_mod``
are malicious clients built from the same pieces), a node replays bytes it has seen, and a
ServerApp (coordinator + consumer) chooses the messages it sends. The committee, the
ledger and every honest client run the unmodified code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "strategies"))

import flower_apps as apps
from flower_harness import LocalGrid
from flwr.app import ArrayRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from kaires_fl.strategies import KairesFedAvg, make_kaires_mod, wire

from kaires_fl.errors import ConfigError
from kaires_fl.simulation import LocalCommittee

N = apps.NUM_NODES
C = 10.0  # clip norm of every strategy here
W = apps.NUM_EXAMPLES_CAP


def _strategy(committee: LocalCommittee, **kw) -> KairesFedAvg:
    kw.setdefault("num_examples_cap", W)
    return KairesFedAvg(
        fraction_evaluate=0.0,
        min_available_nodes=N,
        min_train_nodes=N,
        committee=committee,
        clip_norm=C,
        **kw,
    )


def _run(strategy: KairesFedAvg, grid: LocalGrid, rounds: int) -> np.ndarray:
    res = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(apps.task.initial_arrays()), num_rounds=rounds
    )
    return np.concatenate([a.ravel() for a in res.arrays.to_numpy_ndarrays()])


def _honest_fedavg(rounds: int, nodes: list[int]) -> np.ndarray:
    arrays = apps.task.initial_arrays()
    for _ in range(rounds):
        arrays = apps.plain_fedavg(arrays, nodes)
    return np.concatenate([a.ravel() for a in arrays])


def _claiming_app(
    claims: dict[int, float], push: dict[int, float] | None = None, fault: str | None = None
) -> ClientApp:
    """The example's ClientApp, where node ``p`` claims ``claims[p]`` examples and (if in
    ``push``) returns the global model plus ``push[p]`` in every parameter; node 0 runs
    the mod's ``fault`` (if any)."""
    push = push or {}
    mod = make_kaires_mod(
        simulation=True, fault=lambda c: fault if c.node_config["partition-id"] == 0 else None
    )
    app = ClientApp(mods=[mod])

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        from flwr.app import MetricRecord

        p = int(ctx.node_config["partition-id"])
        X, y = apps.task.load_partition(p, N)
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        new = (
            [a + push[p] for a in arrays] if p in push else apps.task.train(arrays, X, y, epochs=5)
        )
        n = claims.get(p, len(y))
        return Message(
            RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": n})}),
            reply_to=msg,
        )

    return app


def test_weight_cap_is_configuration_not_derived_from_claims() -> None:
    """Fairness (#12): W is a required configuration of KairesFedAvg; a strategy without it
    refuses to start instead of deriving W from what clients claim."""
    with pytest.raises(ConfigError, match="num_examples_cap"):
        KairesFedAvg(committee=LocalCommittee(), num_examples_cap=None)
    with pytest.raises(ConfigError, match="num_examples_cap"):
        KairesFedAvg(committee=LocalCommittee(), num_examples_cap=float("inf"))


def test_huge_claimed_weight_buys_no_more_than_weight_one() -> None:
    """Fairness / robustness (#12): a client claiming 10^15 examples while pushing the model
    away gets exactly the weight of a client with W examples (1), in round 1 and in round 2
    (on 40b7995 round 2's W became 10^15: the honest weights fell to ≈ 0 and the attacker
    set the global model alone). The global model moves by at most C per round whatever
    the weights (‖Σ v‖ ≤ Σ w is proven), and the consumer learns Σ w only from the proven
    aggregate."""
    finals = {}
    for claim in (1e15, float(W)):
        committee = LocalCommittee()
        grid = LocalGrid(_claiming_app({0: claim}, push={0: 50.0}), N)
        s = _strategy(committee)
        finals[claim] = (_run(s, grid, 2), s)
    np.testing.assert_allclose(finals[1e15][0], finals[float(W)][0], rtol=0, atol=1e-9)
    s = finals[1e15][1]
    honest_w = sum(len(apps.task.load_partition(p, N)[1]) / W for p in range(1, N))
    prev = np.concatenate([a.ravel() for a in apps.task.initial_arrays()])
    for r in (1, 2):
        res = s.kaires_rounds[r]["result"]
        assert len(res.accepted) == N and res.status == "done"
        # Σ w from the aggregate: the attacker counts 1 (− 2^-f), the others n/W
        assert abs(res.aggregate["weight"] - (1.0 + honest_w)) < N * 2.0**-18
    final = finals[1e15][0]
    assert np.linalg.norm(final - prev) <= 2 * C * (1 + 1e-9)


def test_underweight_update_is_rejected() -> None:
    """Robustness (#12): a client whose measurement carries a full-norm update with the
    smallest weight (it would pull the average by C/Σw while adding nothing to Σ w) fails
    the proven ‖v‖ ≤ w check on shares: rejected every round, the result is FedAvg over the
    honest clients. (On 40b7995 the weight was a public claim outside the proof: a client
    claiming 0 examples with ‖v‖ = 1 was accepted.)"""
    committee = LocalCommittee()
    grid = LocalGrid(apps.make_client_app(faults={0: "underweight"}), N)
    s = _strategy(committee)
    final = _run(s, grid, 2)
    for r in (1, 2):
        res = s.kaires_rounds[r]["result"]
        assert set(res.rejected) == {apps.policy_id(0)}
        assert len(res.accepted) == N - 1
    np.testing.assert_allclose(final, _honest_fedavg(2, list(range(1, N))), atol=1e-4)


def _inflating_app(copies: int = 50) -> ClientApp:
    """Node 0 runs its own mod (built from the public provider pieces, with its own key):
    it checks the job as an honest provider would, then seals ``copies`` copies of a
    pushed update (+50 per parameter, 10^15 examples claimed) in one submission."""
    from kaires_fl.strategies.provider import FlowerProvider

    from kaires_fl.aggregation.job import job_statistic

    def attacker(msg: Message, ctx: Context, call_next):
        from flwr.app import ConfigRecord

        cfg = msg.content.config_records["config"]
        p = FlowerProvider.from_context(ctx, simulation=True)
        if cfg.get(wire.PHASE) == wire.PHASE_ENROL:
            return Message(RecordDict({wire.REPLY: ConfigRecord(p.enrol(ctx, cfg))}), reply_to=msg)
        offer = p.check_job(ctx, cfg)
        stat = job_statistic(offer.job)
        meas = stat.measurements(np.full(stat.length, 50.0), 1e15)
        rec = p.seal(offer, np.repeat(meas, copies, axis=0))
        return Message(RecordDict({wire.REPLY: ConfigRecord(rec)}), reply_to=msg)

    bad = ClientApp(mods=[attacker])

    @bad.train()
    def train(msg: Message, ctx: Context) -> Message:  # never reached: the mod answers
        return Message(RecordDict(), reply_to=msg)

    honest = apps.make_client_app()
    return lambda m, c: (bad if c.node_config["partition-id"] == 0 else honest)(m, c)


@pytest.mark.parametrize("how", ["own-mod", "fault-hook"])
def test_batch_inflated_model_update_is_refused(how: str) -> None:
    """Robustness (#6): a Flower client that seals a valid, pushed update 50 times in one
    submission (batch 50) is refused before aggregation (a model update has B = 1) and
    moves the global model by nothing: it equals FedAvg over the honest clients. On
    40b7995 the batch was summed: the same attack (own mod) moved the model 396 away from
    honest FedAvg in one round (the review measured 712 against a per-client bound of
    ≈ 4.2)."""
    committee = LocalCommittee()
    if how == "own-mod":
        app = _inflating_app()
    else:
        app = _claiming_app({0: 1e15}, push={0: 50.0}, fault="batch_inflation")
    grid = LocalGrid(app, N)
    s = _strategy(committee)
    final = _run(s, grid, 1)
    res = s.kaires_rounds[1]["result"]
    assert apps.policy_id(0) in res.refused and "batch" in res.refused[apps.policy_id(0)]
    assert apps.policy_id(0) not in res.accepted and len(res.accepted) == N - 1
    honest = _honest_fedavg(1, list(range(1, N)))
    assert np.linalg.norm(final - honest) <= 1e-3


def _replaying_app(victim_record: dict, victim_policy: str) -> ClientApp:
    """A node that answers the enrolment with another node's recorded reply and every job
    with garbage under that node's policy."""

    def mod(msg: Message, ctx: Context, call_next):
        from flwr.app import ConfigRecord

        cfg = msg.content.config_records.get("config")
        phase = None if cfg is None else cfg.get(wire.PHASE)
        if phase == wire.PHASE_ENROL:
            return Message(RecordDict({wire.REPLY: ConfigRecord(victim_record)}), reply_to=msg)
        if phase == wire.PHASE_JOB:
            rec = {"policy": victim_policy, "write-tx": b"x", wire.SUBMISSION: b"x"}
            return Message(RecordDict({wire.REPLY: ConfigRecord(rec)}), reply_to=msg)
        return call_next(msg, ctx)

    app = ClientApp(mods=[mod])

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:  # never reached: the mod answers
        return Message(RecordDict(), reply_to=msg)

    return app


def test_replayed_enrolment_cannot_take_over_another_nodes_policy() -> None:
    """Fairness (suspected finding, confirmed): node 10 replays node 1's public enrolment
    reply (its signed darc.create) and then answers jobs under node 1's policy. The reply
    is bound to a fresh challenge and the node id, so node 10 is not enrolled and node 1's
    submission is aggregated (checked on 40b7995: node 10 was enrolled under node 1's
    policy and its garbage reply replaced node 1's submission, which was refused: node 1
    was dropped from the round)."""
    committee = LocalCommittee()
    grid = LocalGrid(apps.make_client_app(), N)
    first = _strategy(committee)
    first.enrol_nodes(grid, [1])
    (reply,) = [m for m in grid.received if m.metadata.src_node_id == 1]
    victim_record = dict(reply.content.config_records[wire.REPLY])
    victim_policy = first.enrolled[1][0]

    replayer = _replaying_app(victim_record, victim_policy)
    honest = apps.make_client_app()

    def route(msg: Message, ctx: Context) -> Message:
        return (replayer if ctx.node_id == N else honest)(msg, ctx)

    grid.client_app = route
    s = _strategy(committee)
    _run(s, grid, 1)
    assert N not in s.enrolled and "bad enrolment" in s.enrol_refusals[N]
    assert s.enrolled[1][0] == victim_policy
    res = s.kaires_rounds[1]["result"]
    assert victim_policy in res.accepted and len(res.accepted) == N - 1


def _node_config(committee: LocalCommittee, pid: int, **extra: str) -> dict:
    from kaires_fl.strategies.committee import CommitteeConnection
    from kaires_fl.strategies.provider import committee_id_of

    desc = CommitteeConnection(committee).description
    cfg = {
        "partition-id": pid,
        "num-partitions": N,
        "kaires-key": f"{pid + 1:064x}",
        "kaires-trusted-chain-id": committee.ledger.genesis.chain_id,
        "kaires-trusted-committee": committee_id_of(desc),
        "kaires-trusted-lts": committee.lts_id,
        "kaires-grants": committee.consumer.public,
    }
    cfg.update(extra)
    return cfg


def test_outside_simulation_no_trust_on_first_use_or_public_seed_keys() -> None:
    """Privacy: a node that is not in simulation never trusts the ledger, committee or LTS
    the ServerApp names on first use, never derives its key from the public run-config
    seed and never grants whichever consumer asks — even if the ServerApp's run config says
    ``kaires-simulation`` (on 40b7995 kaires_mod pinned whatever the first enrolment named,
    so a coordinator with its own ledger and committee received the node's shares)."""
    committee = LocalCommittee()
    app = apps.make_client_app(mod=make_kaires_mod())  # the deployment mod
    grid = LocalGrid(app, N, run_config={"kaires-simulation": True})
    s = _strategy(committee)
    with pytest.raises(ConfigError):
        _run(s, grid, 1)
    assert all("kaires-key" in why for why in s.enrol_refusals.values())
    # A configured key but no anchors: trust on first use is refused, naming the setting.
    for p, ctx in grid.contexts.items():
        ctx.node_config.update({"kaires-key": f"{p:064x}"})
    s = _strategy(committee)
    with pytest.raises(ConfigError):
        _run(s, grid, 1)
    assert all("kaires-trusted-chain-id" in why for why in s.enrol_refusals.values())
    # Fully configured nodes enrol and run a round with the committee they trust.
    for p, ctx in grid.contexts.items():
        ctx.node_config.update(_node_config(committee, p - 1))
    s = _strategy(committee)
    _run(s, grid, 1)
    assert len(s.kaires_rounds[1]["result"].accepted) == N
    # ... and refuse a ServerApp naming another committee's ledger at enrolment.
    other = LocalCommittee(seed=7)
    s2 = _strategy(other)
    with pytest.raises(ConfigError):
        _run(s2, grid, 1)
    assert all("trusts" in why for why in s2.enrol_refusals.values())


def test_enrolled_policy_names_only_the_pinned_committee() -> None:
    """Privacy (interface C): the policy a Flower provider signs names exactly the
    aggregation committee it pinned, so the ledger refuses a job on any other committee."""
    from kaires_fl.strategies.provider import committee_id_of

    from kaires_fl.ledger.darc import darc_key

    committee = LocalCommittee()
    grid = LocalGrid(apps.make_client_app(), N)
    s = _strategy(committee)
    s.enrol_nodes(grid, grid.get_node_ids())
    cid = committee_id_of(s.committee.description)
    for pid, _ in s.enrolled.values():
        terms = committee.client.get(darc_key(pid))["terms"]
        assert terms["committees"] == [cid]


def test_plain_train_message_cannot_extract_an_update() -> None:
    """Privacy: a ServerApp that sends a plain train message (no job) gets a refusal,
    never the handler's arrays or metrics."""
    grid = LocalGrid(apps.make_client_app(), 1)
    msg = Message(
        RecordDict({"arrays": ArrayRecord(apps.task.initial_arrays())}),
        message_type=MessageType.TRAIN,
        dst_node_id=1,
    )
    (reply,) = grid.send_and_receive([msg])
    assert reply.has_error() and not reply.has_content()
