"""The model-update benchmarks (``kaires_fl.bench.update``, area ``update``): registered,
and each measurement runs on small sizes (the real sizes run in ``kaires bench``)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, RecordDict

from kaires_fl import bench
from kaires_fl.bench import update


def test_update_area_is_registered_with_its_metrics() -> None:
    assert "update" in bench.AREAS
    for name in (
        "update_elements_per_param",
        "update_bytes_per_param",
        "update_100k_round_s",
        "update_1m_round_s",
        "update_1m_peak_rss_mb",
    ):
        assert name in bench.METRICS


def test_upload_bytes_counts_every_byte_value_of_the_reply() -> None:
    rec = ConfigRecord({"write-tx": b"x" * 7, "parts": [b"a" * 3, b"b" * 5], "n": 4, "s": "ab"})
    reply = SimpleNamespace(content=RecordDict({"kaires.reply": rec}))  # a reply's content
    assert update.upload_bytes(reply) == 15


def test_a_small_round_goes_through_kaires_fedavg_and_reports_its_costs() -> None:
    """Three clients, 2,000 parameters: every client accepted, the round timed, and the
    sizes consistent: at least one field element (8 bytes) per parameter and aggregator
    share travels, and the proof adds elements to the measurement."""
    out = update.run_rounds(2_000, 3, 1)
    assert out["accepted"] == [3]
    assert out["round_s"][0] > out["committee_s"][0] > 0 and out["client_s"][0] > 0
    assert out["bytes"][0] / 2_000 >= 8
    stat = out["statistic"][0]
    assert stat.length == 2_000
    assert update.elements_per_param(stat) > stat.circuit.MEAS_LEN / 2_000 >= 1


def test_parallel_round_gives_the_same_accepted_sizes() -> None:
    """The round with the clients and the committee's parties on two threads."""
    serial = update.run_rounds(1_000, 3, 1)
    parallel = update.run_rounds(1_000, 3, 1, workers=2)
    assert parallel["accepted"] == [3] and parallel["bytes"] == serial["bytes"]


def test_child_round_reports_its_time_and_peak_memory() -> None:
    out = update.child_round(1_000, clients=2, warmup=0)
    assert math.isfinite(out["round_s"]) and out["round_s"] > 0 and out["round_cpu_s"] > 0
    assert 50 < out["peak_rss_mb"] < update.CHILD_MEMORY_CAP_MB


def test_child_round_over_its_memory_cap_is_nan_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(update, "CHILD_MEMORY_CAP_MB", 64)
    out = update.child_round(1_000, clients=2, warmup=0)
    assert all(math.isnan(v) for v in out.values()) and len(out) == 3
    assert "memory cap 64 MB" in capsys.readouterr().err
