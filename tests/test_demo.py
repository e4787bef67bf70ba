"""``kaires demo``: runs the whole flow with a Byzantine aggregator and an out-of-range
provider, matches scikit-learn, names who was rejected and caught, and prints the audit."""

from __future__ import annotations

import pytest


def test_demo_prints_the_result_and_the_audit(capsys: pytest.CaptureFixture[str]) -> None:
    from kaires_fl import demo

    assert demo.main(quiet=True) == 0
    text = capsys.readouterr().out
    assert "rejected provider provider-005" in text
    assert "caught aggregator 2" in text
    assert "ledger verified from genesis" in text
    assert "access records of provider-000" in text
    assert text.rstrip().endswith("OK")
