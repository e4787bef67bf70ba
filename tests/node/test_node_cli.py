"""The CLI commands that need no running network: --version, node setup, group, committee init."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kaires_fl import __version__
from kaires_fl.cli import main
from kaires_fl.node.config import PRIVATE_FILE, PUBLIC_FILE, load_group, load_node, load_public
from kaires_fl.node.host import group_genesis


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kaires_fl.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kaires"), p.stderr
    assert ": error: " in lines[0]
    assert "Traceback" not in p.stderr
    return lines[0]


def test_version_subprocess(tmp_path: Path) -> None:
    p = _run("--version", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"kaires {__version__}"


def test_committee_init_subprocess(tmp_path: Path) -> None:
    p = _run("committee", "init", "--dir", "c", "--nodes", "4", "--base-port", "9000", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    group = load_group(tmp_path / "c" / "group.toml")
    assert [e.address for e in group.nodes] == [f"127.0.0.1:{9000 + i}" for i in range(4)]
    assert group.threshold == 1 and group.trustee_threshold == 1
    for i in range(4):
        d = tmp_path / "c" / f"node-{i}"
        assert stat.S_IMODE((d / PRIVATE_FILE).stat().st_mode) == 0o600
        load_node(d, group)
    assert f"chain id {group_genesis(group).chain_id}" in p.stdout
    assert f"committee id {group.committee_id}" in p.stdout
    # a second init never overwrites the identities
    again = _run("committee", "init", "--dir", "c", "--nodes", "4", cwd=tmp_path)
    assert "already exists" in _one_error_line(again)


def test_node_setup_and_group_subprocess(tmp_path: Path) -> None:
    for i in range(4):
        p = _run(
            "node",
            "setup",
            "--dir",
            f"op{i}",
            "--address",
            f"10.0.0.{i + 1}:7770",
            "--roles",
            "ledger,trustee,aggregator",
            cwd=tmp_path,
        )
        assert p.returncode == 0, p.stderr
        assert load_public(tmp_path / f"op{i}" / PUBLIC_FILE).address == f"10.0.0.{i + 1}:7770"
    pubs = [f"op{i}/{PUBLIC_FILE}" for i in range(4)]
    p = _run("group", *pubs, "--threshold", "1", "--out", "group.toml", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    group = load_group(tmp_path / "group.toml")
    assert [e.name for e in group.nodes] == [f"op{i}" for i in range(4)]
    bad = _run("group", *pubs, "--threshold", "2", "--out", "g2.toml", cwd=tmp_path)
    assert "3t + 1" in _one_error_line(bad)
    assert not (tmp_path / "g2.toml").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["node", "setup", "--dir", "x", "--address", "nohostport"], "HOST:PORT"),
        (["node", "setup", "--dir", "x", "--address", "h:1", "--roles", "miner"], "roles"),
        (["group", "missing.toml", "--out", "g.toml"], "public file not found"),
        (["committee", "init", "--dir", "c", "--nodes", "0"], "at least one node"),
        (["committee", "init", "--dir", "c", "--nodes", "4", "--base-port", "65534"], "65535"),
        (["committee", "frobnicate"], "invalid choice"),
        (["committee", "init", "--dir", "c"], "--nodes"),
    ],
)
def test_errors_are_one_line_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    p = _run(*args, cwd=tmp_path)
    assert needle in _one_error_line(p)


def test_malformed_public_file_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "p.toml").write_text("name = [")
    assert main(["group", str(tmp_path / "p.toml"), "--out", str(tmp_path / "g.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "malformed TOML" in err[0]


def test_committee_init_in_process_leaves_nothing_half_made(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(["committee", "init", "--dir", str(tmp_path / "c"), "--nodes", "4"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "4 nodes" in out
    rc = main(
        ["committee", "init", "--dir", str(tmp_path / "d"), "--nodes", "3", "--threshold", "1"]
    )
    assert rc == 2
    assert "3t + 1" in capsys.readouterr().err
    assert not list((tmp_path / "d").glob("node-*"))  # no orphan identities
