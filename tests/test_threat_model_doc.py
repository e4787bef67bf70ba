"""docs/threat-model.md names, for every claim, the tests that play its attacker: each named
test must exist (a renamed or deleted test would leave a claim without its evidence)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REF = re.compile(r"`((?:[\w/]+/)?test_\w+\.py)?::(\w+)")


def _references() -> list[tuple[str, str]]:
    """(test file relative to tests/, test name) for every reference, in order; a bare
    ``::name`` refers to the file named last before it."""
    refs: list[tuple[str, str]] = []
    for line in (ROOT / "docs" / "threat-model.md").read_text().splitlines():
        current = None
        for m in _REF.finditer(line):
            current = m.group(1) or current
            assert current is not None, f"'::{m.group(2)}' names no file before it: {line[:80]}"
            refs.append((current, m.group(2)))
    return refs


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def test_every_test_the_threat_model_names_exists() -> None:
    refs = _references()
    assert len(refs) > 50
    missing = []
    for rel, name in refs:
        path = ROOT / "tests" / rel
        if not path.exists() or name not in _defined(path):
            missing.append(f"{rel}::{name}")
    assert not missing, f"docs/threat-model.md names tests that do not exist: {missing}"
