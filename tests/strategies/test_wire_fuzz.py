"""Fuzz tests of everything a Flower peer can send (issue 9, #15).

Robustness: every decoder of :mod:`kaires_fl.strategies.wire` and every handler a peer
reaches (the client's ``kaires_mod``; the ServerApp's enrolment and reply collection)
turns arbitrary or mutated bytes and values into a ``KairesError`` (or a refusal), never
another exception, and keeps working afterwards.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import flower_apps as apps
import numpy as np
import pytest
from flower_harness import LocalGrid
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kaires_fl.strategies import KairesFedAvg, wire
from kaires_fl.strategies.committee import CommitteeConnection

from kaires_fl.errors import KairesError
from kaires_fl.simulation import LocalCommittee

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.lru_cache(maxsize=1)
def _world() -> dict[str, Any]:
    """A committee, a strategy with node 1 enrolled, and valid encodings to mutate."""
    committee = LocalCommittee()
    grid = LocalGrid(apps.make_client_app(), 2)
    s = apps.fedavg(2, committee)
    s.start(grid=grid, initial_arrays=ArrayRecord(apps.task.initial_arrays()), num_rounds=1)
    job_msg = next(m for m in grid.sent if m.content["config"].get(wire.PHASE) == wire.PHASE_JOB)
    enrol = next(m for m in grid.received if wire.REPLY in m.content.config_records)
    reply = next(
        m
        for m in grid.received
        if wire.REPLY in m.content.config_records
        and wire.SUBMISSION in m.content.config_records[wire.REPLY]
    )
    return {
        "committee": committee,
        "strategy": s,
        "grid": grid,
        "job_config": dict(job_msg.content["config"]),
        "enrol_record": dict(enrol.content.config_records[wire.REPLY]),
        "reply_record": dict(reply.content.config_records[wire.REPLY]),
    }


def _samples() -> dict[str, bytes]:
    w = _world()
    cfg, rec = w["job_config"], w["reply_record"]
    return {
        "committee": cfg[wire.COMMITTEE],
        "proofs": cfg[wire.PROOFS],
        "enrolment": w["enrol_record"][wire.ENROLMENT],
        "tx": rec["write-tx"],
        "submission": rec[wire.SUBMISSION],
    }


DECODERS = {
    "committee": wire.decode_committee,
    "proofs": wire.decode_proofs,
    "enrolment": wire.decode_enrolment,
    "tx": wire.decode_tx,
    "submission": lambda b: wire.decode_submission(
        {
            wire.SUBMISSION: b,
            wire.MEAS_PARTS: _world()["reply_record"][wire.MEAS_PARTS],
            wire.PROOF_PARTS: _world()["reply_record"][wire.PROOF_PARTS],
        }
    ),
}


def _only_typed(fn: Any, data: Any) -> None:
    with contextlib.suppress(KairesError):
        fn(data)


def test_valid_encodings_decode() -> None:
    for name, data in _samples().items():
        DECODERS[name](data)


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_give_typed_errors(name: str, data: bytes) -> None:
    _only_typed(DECODERS[name], data)


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=1 << 16),
    pos=st.integers(min_value=0, max_value=1 << 16),
    byte=st.integers(min_value=0, max_value=255),
    tail=st.binary(max_size=16),
)
def test_mutated_encodings_give_typed_errors(
    name: str, cut: int, pos: int, byte: int, tail: bytes
) -> None:
    good = bytearray(_samples()[name])
    flipped = bytearray(good)
    flipped[pos % len(good)] = byte
    for data in (bytes(flipped), bytes(good[: cut % len(good)]), bytes(good) + tail):
        _only_typed(DECODERS[name], data)


VALUES = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.lists(st.binary(max_size=8), max_size=4),
)


@FUZZ
@given(data=VALUES, other=VALUES)
def test_decode_submission_on_arbitrary_record_values(data: Any, other: Any) -> None:
    rec = _world()["reply_record"]
    for mapping in (
        {wire.SUBMISSION: data, wire.MEAS_PARTS: other, wire.PROOF_PARTS: other},
        {**rec, wire.MEAS_PARTS: other},
        {**rec, wire.SUBMISSION: data},
    ):
        _only_typed(wire.decode_submission, mapping)
    for fn in (wire.decode_committee, wire.decode_enrolment, wire.decode_tx, wire.decode_proofs):
        _only_typed(fn, data)


KEYS = st.sampled_from(
    [wire.GENESIS, wire.JOB, wire.PROOFS, wire.COMMITTEE, wire.CONSUMER, wire.CHALLENGE]
)
CONFIG_VALUES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)


def _client_reply(config: dict[str, Any]) -> Message:
    w = _world()
    grid: LocalGrid = w["grid"]
    msg = Message(
        RecordDict(
            {"arrays": ArrayRecord(apps.task.initial_arrays()), "config": ConfigRecord(config)}
        ),
        message_type=MessageType.TRAIN,
        dst_node_id=1,
    )
    (reply,) = grid.send_and_receive([msg])
    return reply


@FUZZ
@given(
    phase=st.sampled_from([wire.PHASE_JOB, wire.PHASE_ENROL]),
    changes=st.dictionaries(KEYS, CONFIG_VALUES, max_size=4),
)
def test_kaires_mod_refuses_malformed_messages_and_keeps_working(
    phase: str, changes: dict[str, Any]
) -> None:
    """The client's mod answers every malformed ServerApp message with a refusal (a Flower
    error reply naming the problem), never a crash of the ClientApp, never plaintext."""
    cfg = {**_world()["job_config"], wire.PHASE: phase, **changes}
    reply = _client_reply(cfg)
    if reply.has_error():
        assert "kaires_mod refused" in reply.error.reason, reply.error.reason
    else:
        assert not reply.content.array_records


def test_kaires_mod_still_answers_a_valid_enrolment_after_fuzzing() -> None:
    """The mod is not dead after the fuzzing: a valid enrolment gets a signed Enrolment."""
    import secrets

    conn = _world()["strategy"].committee
    cfg = {
        wire.PHASE: wire.PHASE_ENROL,
        wire.GENESIS: conn.genesis_bytes,
        wire.CONSUMER: conn.consumer_public,
        wire.COMMITTEE: conn.description_bytes,
        wire.CHALLENGE: secrets.token_bytes(32),
    }
    reply = _client_reply(cfg)
    assert not reply.has_error(), reply.error.reason
    enrolment = wire.decode_enrolment(reply.content.config_records[wire.REPLY][wire.ENROLMENT])
    assert enrolment.policy == _world()["strategy"].enrolled[1][0]


@FUZZ
@given(
    records=st.dictionaries(
        st.integers(min_value=1, max_value=5),
        st.dictionaries(
            st.sampled_from([wire.ENROLMENT, "public", "policy", "policy-tx"]), VALUES, max_size=4
        ),
        max_size=3,
    ),
    challenge=st.binary(min_size=32, max_size=32),
)
def test_server_enrolment_handler_records_faults_and_survives(
    records: dict[int, dict[str, Any]], challenge: bytes
) -> None:
    conn: CommitteeConnection = _world()["strategy"].committee
    done = conn.enrol(records, dict.fromkeys(records, challenge))
    assert done == {} and set(conn.enrol_errors) == set(records)
    # A mutated copy of a real enrolment is refused too (its signature covers the challenge).
    real = _world()["enrol_record"]
    assert conn.enrol({1: real}, {1: challenge}) == {}


@FUZZ
@given(
    record=st.dictionaries(
        st.sampled_from(["policy", "write-tx", wire.SUBMISSION, wire.MEAS_PARTS]),
        VALUES,
        max_size=4,
    )
)
def test_server_collect_refuses_malformed_replies(record: dict[str, Any]) -> None:
    s: KairesFedAvg = _world()["strategy"]
    pid = s.enrolled[1][0]
    rec = {k: v for k, v in record.items() if v is not None}
    msg = Message(
        RecordDict({"arrays": ArrayRecord([np.zeros(1)])}),
        message_type=MessageType.TRAIN,
        dst_node_id=1,
    )
    out = Message(RecordDict({wire.REPLY: ConfigRecord({"policy": pid, **rec})}), reply_to=msg)
    out.metadata.__dict__["_src_node_id"] = 1
    subs, _, refusals = s.collect(1, [out])
    if subs:
        res = s.committee.aggregate(
            s.kaires_rounds[1]["job"], s.kaires_rounds[1]["statistic"], subs
        )
        assert pid in res.refused
    else:
        assert 1 in refusals
