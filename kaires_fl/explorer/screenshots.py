"""Screenshots of every explorer page, taken by headless Chromium (``python -m
kaires_fl.explorer.screenshots [OUT_DIR]``, default ``docs/img``).

Also the helpers the browser tests use: :func:`build_demo_ledger` (a persisted
LocalCommittee ledger with a job that has a rejected provider, a Byzantine aggregator and a
provider id carrying markup), :func:`running_explorer` (``kaires explorer --db`` in a child
process on a free port, readiness polled, always stopped) and :func:`launch_chromium`
(Debian's ``/usr/bin/chromium`` through Playwright; never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where Debian's chromium package puts the browser (override: KAIRES_CHROMIUM).
CHROMIUM = os.environ.get("KAIRES_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: A policy id a consumer may name in a job (ids are user-chosen): it must render as text.
MARKUP_ID = '<script>window.__kaires_xss = 1</script><img src=x onerror="window.__kaires_xss=2">'


@dataclass(frozen=True)
class DemoLedger:
    """What :func:`build_demo_ledger` made: the db_dir and the facts the pages must show."""

    db_dir: Path
    job: str
    rejected: str  # policy id of the provider whose submission was rejected
    rejected_reason: str
    faulty_index: int
    faulty_reason: str
    provider: str  # policy id of an accepted provider
    markup_job: str  # a job that names MARKUP_ID (excluded, with the ledger's reason)
    height: int  # the chain's height (10: the refused darc.create is the last block)


def build_demo_ledger(db_dir: str | os.PathLike[str]) -> DemoLedger:
    """A LocalCommittee ledger persisted in ``db_dir`` (4 ledger nodes, 4 aggregators, t = 1):
    one mean/variance job over 4 providers with provider 1 submitting out-of-range values
    and aggregator 2 Byzantine, then a job naming :data:`MARKUP_ID` besides two real
    providers (the ledger excludes it: no policy), and a refused ``darc.create`` of that id.
    """
    import numpy as np

    from kaires_fl.simulation import LocalCommittee
    from kaires_fl.statistics import MeanVarianceStats

    committee = LocalCommittee(
        db_dir=db_dir,
        faults={"aggregator": {2: "byzantine"}, "provider": {1: "out_of_range"}},
    )
    try:
        stat = MeanVarianceStats(2, [(0.0, 10.0), (0.0, 10.0)], max_rows=100)
        rng = np.random.default_rng(7)
        data = {f"clinic-{i}": (rng.uniform(0, 10, (6, 2)), np.zeros(6)) for i in range(4)}
        result = committee.run_job(stat, data)
        r = result.report
        (rej_label, rej_reason), *_ = r["rejected"].items()
        (faulty_index, faulty_reason), *_ = r["faulty_aggregators"].items()
        ids = {lb: committee.provider(lb).policy_id for lb in data}
        consumer = committee.consumer
        payload = consumer.job_payload(
            stat, [ids["clinic-0"], ids["clinic-2"], MARKUP_ID], committee.committee_id,
            min_providers=2,
        )  # fmt: skip
        tx = committee.client.sign(consumer.identity, "job.create", payload)
        committee.client.submit(tx)
        committee.client.wait([tx.id], proof=False)
        bad = committee.client.sign(
            consumer.identity, "darc.create", {"id": MARKUP_ID, "rules": {}, "terms": None}
        )
        committee.client.submit(bad, check=False)  # refused in its block, reason recorded
        committee.client.wait([bad.id], proof=False)
        return DemoLedger(
            Path(db_dir),
            r["job"],
            ids[rej_label],
            rej_reason,
            int(faulty_index),
            faulty_reason,
            ids["clinic-0"],
            tx.id,
            committee.client.height,
        )
    finally:
        committee.close()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_explorer(db_dir: str | os.PathLike[str], timeout: float = 90.0) -> Iterator[str]:
    """``kaires explorer --db db_dir`` on a free loopback port; yields its base URL once it
    answers, and stops it (SIGTERM, then SIGKILL) on exit."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "kaires_fl.cli", "explorer", "--db", str(db_dir)]
    # its output goes to a file, not a pipe: a chatty server never blocks on it
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=log, stderr=log)
        try:
            _wait_answers(proc, url, log, timeout)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_answers(proc: subprocess.Popen[bytes], url: str, log: Any, timeout: float) -> None:
    """Poll ``url`` until it answers 200 (RuntimeError if the process exits or time runs out)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            err = log.read().decode(errors="replace")[-4000:]
            raise RuntimeError(f"kaires explorer exited with {proc.returncode}: {err}")
        try:
            with urllib.request.urlopen(url + "/", timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"kaires explorer did not answer on {url} in {timeout} s")
        time.sleep(0.1)


def chromium_missing() -> str | None:
    """Why the browser cannot run here (None: it can)."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


def launch_chromium(pw: Any) -> Any:
    """Debian's Chromium, headless, through a Playwright instance (no browser download)."""
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def take_screenshots(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Build the demo ledger, serve it, and save a PNG of each page in ``out_dir``."""
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="kaires-explorer-"))
    saved = []
    try:
        demo = build_demo_ledger(tmp / "db")
        pages = {
            "explorer-chain.png": "/",
            "explorer-job.png": f"/job/{demo.job}",
            "explorer-provider.png": f"/provider/{demo.provider}",
            "explorer-committees.png": "/committees",
        }
        with running_explorer(demo.db_dir) as url, sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                for name, path in pages.items():
                    page.goto(url + path)
                    page.screenshot(path=str(out / name), full_page=True)
                    saved.append(out / name)
            finally:
                browser.close()
        # a node whose database was altered: the chain page names it and the block
        tamper_block(demo.db_dir / "ledger-1.sqlite", 3)
        with running_explorer(demo.db_dir) as url, sync_playwright() as pw:
            browser = launch_chromium(pw)
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 600})
                page.goto(url + "/")
                page.screenshot(path=str(out / "explorer-tampered.png"))
                saved.append(out / "explorer-tampered.png")
            finally:
                browser.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return saved


def tamper_block(db_file: str | os.PathLike[str], height: int) -> None:
    """Alter block ``height`` in one node's SQLite file as an attacker with disk access
    would: a transaction's recorded outcome flipped, the record re-encoded canonically."""
    import sqlite3

    from kaires_fl.ledger.encoding import canonical, decode_canonical

    conn = sqlite3.connect(str(db_file))
    try:
        (data,) = conn.execute("SELECT data FROM blocks WHERE height = ?", (height,)).fetchone()
        rec = decode_canonical(bytes(data))
        res = rec["block"]["results"][0]
        rec["block"]["results"][0] = [not res[0], "forged outcome"]
        with conn:
            conn.execute("UPDATE blocks SET data = ? WHERE height = ?", (canonical(rec), height))
    finally:
        conn.close()


if __name__ == "__main__":  # pragma: no cover
    target = sys.argv[1] if len(sys.argv) > 1 else "docs/img"
    for p in take_screenshots(target):
        print(p)
