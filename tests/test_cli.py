"""``kaires bench``: the table (units, targets, meanings), ``--json`` and ``--only`` checks."""

from __future__ import annotations

import json

import pytest

from kaires_fl import bench
from kaires_fl.cli import EXIT_CONFIG, bench_table, main


def test_unknown_only_area_is_an_error_naming_the_valid_ones(capsys) -> None:
    assert main(["bench", "--only", "bogus"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "'bogus'" in err and all(a in err for a in bench.AREAS)
    assert main(["bench", "--only", "field,nope"]) == EXIT_CONFIG  # nothing runs
    assert main(["bench", "--only", ""]) == EXIT_CONFIG
    assert capsys.readouterr().out == ""


def test_every_known_metric_has_unit_target_and_meaning() -> None:
    for name, (unit, target, meaning) in bench.METRICS.items():
        assert unit and target and meaning and len(meaning) <= 80, name
    assert bench.describe("new_thing_ms")[0] == "ms"  # unknown metric: unit from its suffix


def test_table_shows_units_targets_and_meanings() -> None:
    result = {
        "field64_mul_per_s": 2756863901.933047,
        "flower_round_overhead": 9.556021479353218,
        "linreg_proofs": 2.0,
        "machine": {"cpus": 2, "python": "3.11.7"},
    }
    table = bench_table(result)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "unit", "target", "meaning"]
    (row,) = [line for line in lines if line.startswith("flower_round_overhead")]
    assert "9.556" in row and "×" in row and "≤ 1.3×" in row and "KairesFedAvg" in row
    (row,) = [line for line in lines if line.startswith("field64_mul_per_s")]
    assert "2,756,863,902" in row and "1/s" in row and "9.556021479353218" not in table
    assert "machine: cpus 2, python 3.11.7" in table


@pytest.mark.parametrize("as_json", [True, False])
def test_bench_field_quick_runs(capsys, as_json: bool) -> None:
    argv = ["bench", "--only", "field", "--quick"] + (["--json"] if as_json else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    if as_json:  # unchanged: one JSON object of raw figures
        data = json.loads(out)
        assert isinstance(data["field64_mul_per_s"], float) and "machine" in data
    else:
        assert "field64_ntt_1024_us" in out and "µs" in out
