"""The explorer through Starlette's TestClient: what each page shows, escaping, GET only, and
verification failures of altered node databases (fast: no browser, no server)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from kaires_fl.cli import main
from kaires_fl.errors import AuditError, ConfigError, EncodingError
from kaires_fl.explorer import plot
from kaires_fl.explorer.app import create_app, make_source
from kaires_fl.explorer.chain import verify_records
from kaires_fl.explorer.screenshots import MARKUP_ID, DemoLedger, running_explorer, tamper_block
from kaires_fl.explorer.sources import DbSource
from kaires_fl.ledger.audit import StateProof
from kaires_fl.ledger.block import Genesis
from kaires_fl.ledger.contracts import DEFAULT_REGISTRY, ContractRegistry
from kaires_fl.ledger.encoding import canonical, decode_canonical


def client(db: Path) -> TestClient:
    return TestClient(create_app(DbSource(db)))


def text(html: str) -> str:
    """The visible text of a page (tags dropped, entities kept as the browser shows them)."""
    out = re.sub(r"<[^>]+>", " ", html)
    out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"')
    out = out.replace("&#39;", "'").replace("&quot;", '"').replace("&amp;", "&")
    return re.sub(r"\s+", " ", out)


@pytest.fixture(scope="module")
def web(demo: DemoLedger) -> TestClient:
    return client(demo.db_dir)


def test_chain_page_shows_blocks_verified_from_genesis(web: TestClient, demo: DemoLedger) -> None:
    r = web.get("/")
    assert r.status_code == 200
    t = text(r.text)
    assert "verified from genesis: yes" in t
    assert re.search(rf"Height {demo.height} ", t)
    for kind in ("calypso.lts", "committee.register", "darc.create ×4", "job.receipt"):
        assert kind in t
    # every block row: proposer and the roster indices of its 3 = 2f + 1 (or more) signers
    rows = re.findall(r'<tr><td><a href="/block/(\d+)">', r.text)
    assert sorted(map(int, rows)) == list(range(1, demo.height + 1))
    assert "ledger-3.sqlite" in t and t.count("verified from genesis") >= 5
    assert r.text.count("<svg") == 2  # jobs per day per provider, time between blocks


def test_job_page_shows_rejected_provider_and_faulty_aggregator(
    web: TestClient, demo: DemoLedger
) -> None:
    r = web.get(f"/job/{demo.job}")
    assert r.status_code == 200
    t = text(r.text)
    rejected = re.search(r'<table id="rejected">(.*?)</table>', r.text, re.S)
    assert rejected is not None
    assert demo.rejected in rejected.group(1) and demo.rejected_reason in rejected.group(1)
    faulty = re.search(r'<table id="faulty">(.*?)</table>', r.text, re.S)
    assert faulty is not None
    assert f"<td>{demo.faulty_index}</td>" in faulty.group(1)
    assert demo.faulty_reason in text(faulty.group(1))
    assert "Accepted (3)" in t and "Rejected (1)" in t and "Faulty aggregators (1)" in t
    assert "mean_variance" in t and "status done" in t
    assert f"proof verified (block {demo.height})" in t


def test_provider_page_lists_accesses_with_checked_proofs(
    web: TestClient, demo: DemoLedger
) -> None:
    r = web.get(f"/provider/{demo.provider}")
    assert r.status_code == 200
    accesses = re.search(r'<table id="accesses">(.*?)</table>', r.text, re.S)
    assert accesses is not None
    rows = accesses.group(1).count('<tr class="ok">')
    assert rows == 2  # the demo job and the markup job both used clinic-0's data
    assert text(accesses.group(1)).count(f"proof verified (block {demo.height})") == 2
    assert demo.job[:16] in accesses.group(1)
    versions = re.search(r'<table id="versions">(.*?)</table>', r.text, re.S)
    assert versions is not None and "darc.create" in versions.group(1)


def test_downloaded_proof_verifies_offline_and_a_forged_one_does_not(
    web: TestClient, demo: DemoLedger
) -> None:
    key = f"access/{demo.provider}/{demo.job}"
    page = web.get(f"/provider/{demo.provider}").text
    assert f'href="/proof?key={quote(key, safe="")}"' in page
    r = web.get("/proof", params={"key": key})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-disposition"].startswith("attachment;")
    genesis = DbSource(demo.db_dir).genesis
    proof = StateProof.from_bytes(r.content)
    entry = proof.verify(genesis)
    assert proof.key == key and entry["job"] == demo.job
    forged = decode_canonical(r.content)
    forged["value"] = {**forged["value"], "consumer": "ff" * 32}
    with pytest.raises(AuditError):
        StateProof.from_bytes(canonical(forged)).verify(genesis)


def test_ledger_values_are_escaped(web: TestClient, demo: DemoLedger) -> None:
    """A policy id is user-chosen: on the job page (excluded, with the ledger's reason), its
    own provider page and the block that refused it, it is text, never markup."""
    pages = [
        web.get(f"/job/{demo.markup_job}"),
        web.get("/provider/" + quote(MARKUP_ID, safe="/")),
        web.get(f"/block/{demo.height}"),
    ]
    for r in pages:
        assert r.status_code == 200
        assert "<script" not in r.text and "<img" not in r.text
        assert "&lt;script&gt;window.__kaires_xss = 1&lt;/script&gt;" in r.text
        assert MARKUP_ID in text(r.text)
    excluded = re.search(r'<table id="excluded">(.*?)</table>', pages[0].text, re.S)
    assert excluded is not None and "has no policy on the ledger" in excluded.group(1)
    assert "refused: LedgerError: policy id" in text(pages[2].text)


def test_get_only_and_no_external_resources(web: TestClient, demo: DemoLedger) -> None:
    paths = [
        "/",
        "/block/1",
        f"/job/{demo.job}",
        f"/provider/{demo.provider}",
        "/committees",
        f"/proof?key=job/{demo.job}",
        "/explorer.css",
    ]
    for path in paths:
        r = web.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script" not in csp
        assert not re.search(r'(src|href|action)="(https?:)?//', r.text), path
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert web.request(method, path).status_code == 405, (method, path)


def test_unknown_things_are_404(web: TestClient) -> None:
    assert web.get("/job/" + "00" * 32).status_code == 404
    assert web.get("/block/1000").status_code == 404
    assert web.get("/provider/nobody").status_code == 404
    assert web.get("/proof", params={"key": "job/none"}).status_code == 404


def test_committees_page(web: TestClient) -> None:
    t = text(web.get("/committees").text)
    assert "4 nodes, f = 1, a block is final with 3 signatures" in t
    assert "n = 4, Shamir degree t = 1, receipt quorum 3" in t
    assert "threshold t = 1" in t  # the trustees' LTS


def test_tampered_block_fails_verification_naming_node_and_block(
    demo_copy: Path, demo: DemoLedger
) -> None:
    tamper_block(demo_copy / "ledger-1.sqlite", 3)
    r = client(demo_copy).get("/")
    t = text(r.text)
    assert "verified from genesis: no" in t
    verdict = re.search(r'id="verdict">(.*?)</div>', r.text, re.S)
    assert verdict is not None
    failures = [text(li).strip() for li in re.findall(r"<li>(.*?)</li>", verdict.group(1), re.S)]
    assert failures == [
        "ledger-1.sqlite : block 3: block transactions/results do not match the header's tx_root"
    ]
    # the pages still show the chain that verified (through another node)
    assert re.search(rf"Height {demo.height} ", t)


def test_tampered_state_row_fails_verification(demo_copy: Path, demo: DemoLedger) -> None:
    key = f"receipt/{demo.job}"
    conn = sqlite3.connect(demo_copy / "ledger-2.sqlite")
    with conn:
        (raw,) = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        value = decode_canonical(bytes(raw))
        value["receipt"]["rejected"] = []
        conn.execute("UPDATE state SET value = ? WHERE key = ?", (canonical(value), key))
    conn.close()
    snap = DbSource(demo_copy).snapshot()
    assert not snap.ok
    (node, why), *more = snap.failures
    assert node == "ledger-2.sqlite" and not more
    assert key in why and why.startswith("stored state after block ")
    t = text(client(demo_copy).get(f"/job/{demo.job}").text)
    assert demo.rejected in t  # the page shows the replayed receipt, not the altered row


def test_replay_failure_keeps_the_prefix_state(demo: DemoLedger) -> None:
    """A block whose transactions do not replay to its results stops the verified chain
    there, and the state shown is exactly the state after the block before it."""
    conn = sqlite3.connect(f"file:{demo.db_dir / 'ledger-0.sqlite'}?mode=ro", uri=True)
    (g,) = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    records = [bytes(d) for (d,) in conn.execute("SELECT data FROM blocks ORDER BY height")]
    conn.close()
    genesis = Genesis.decode(bytes(g))
    reg = ContractRegistry(dict(DEFAULT_REGISTRY._contracts))

    def lying_receipt(view: Any, tx: Any, env: Any) -> dict[str, Any]:
        return {"receipt/x": 1}

    reg.register("job.receipt", lying_receipt, replace=True)
    h = next(
        i + 1
        for i, r in enumerate(records)
        if any(t["kind"] == "job.receipt" for t in decode_canonical(r)["block"]["txs"])
    )
    view = verify_records("n", genesis, records, registry=reg)
    assert view.height == h - 1 and view.offered == len(records)
    assert view.failure is not None and view.failure.startswith(f"block {h}: replay:")
    assert view.get("receipt/x") is None and view.get(f"receipt/{demo.job}") is None
    before = decode_canonical(records[h - 2])["block"]["header"]
    assert view.state.root.hex() == before["state_root"]
    honest = verify_records("n", genesis, records)
    assert honest.ok and honest.height == len(records)


def test_garbage_and_gaps_stop_the_chain(demo: DemoLedger) -> None:
    conn = sqlite3.connect(f"file:{demo.db_dir / 'ledger-0.sqlite'}?mode=ro", uri=True)
    (g,) = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    records = [bytes(d) for (d,) in conn.execute("SELECT data FROM blocks ORDER BY height")]
    conn.close()
    genesis = Genesis.decode(bytes(g))
    view = verify_records("n", genesis, [*records[:4], b"\x00garbage", *records[5:]])
    assert view.height == 4 and view.failure is not None and view.failure.startswith("block 5:")
    view = verify_records("n", genesis, [*records[:2], *records[3:]])
    assert view.height == 2 and view.failure is not None and view.failure.startswith("block 3:")
    with pytest.raises(EncodingError):
        decode_canonical(b"\x00garbage")


def test_cli_explorer_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explorer", "--db", str(tmp_path)]) == 2
    assert "no ledger database" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["explorer"])
    assert exc.value.code == 2
    with pytest.raises(ConfigError, match="no ledger database"):
        DbSource(tmp_path / "missing")
    with pytest.raises(ConfigError, match="exactly one of --group FILE and --db DIR"):
        make_source(group="g.toml", db=str(tmp_path))


def test_plots_escape_labels_and_scale() -> None:
    svg = str(plot.jobs_per_day({"2026-01-02": {"<b>x</b>": 2, "p." + "ab" * 32: 1}}))
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg
    assert "p ·ababab" in svg  # an owner-bound id is shortened to name and owner prefix
    assert "busiest day: 3 provider-jobs" in svg
    heights = [float(h) for h in re.findall(r'height="([\d.]+)" fill', svg)]
    assert heights[0] == pytest.approx(2 * heights[1])  # bars proportional to the counts
    line = str(plot.block_times([10, 30, 35], 1, 0))
    assert "peak 20 ms" in line and "blocks 1–3" in line
    assert "no data yet" in str(plot.block_times([]))
    assert "no data yet" in str(plot.jobs_per_day({}))


def test_allow_list_summary(web: TestClient) -> None:
    page = web.get("/committees").text
    allow = re.search(r'<p id="allow-list">(.*?)</p>', page, re.S)
    assert allow is not None
    assert text(allow.group(1)).startswith("registration required: no (4 governors, quorum 3)")


def test_explorer_process_that_cannot_start_says_why(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match=r"exited with 2: (?s:.*)no ledger database"),
        running_explorer(tmp_path, timeout=60),
    ):
        pass


def _records(db_file: Path) -> tuple[Genesis, list[bytes]]:
    conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
    (g,) = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    records = [bytes(d) for (d,) in conn.execute("SELECT data FROM blocks ORDER BY height")]
    conn.close()
    return Genesis.decode(bytes(g)), records


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_altered_byte_stops_the_chain_before_it(demo: DemoLedger, data: st.DataObject) -> None:
    """Property: whatever byte of whatever record is changed, verify_records never raises,
    verifies no block from the altered one on, and the state it shows is exactly the state
    the last verified block's header commits to."""
    genesis, records = _records(demo.db_dir / "ledger-0.sqlite")
    i = data.draw(st.integers(0, len(records) - 1), label="block index")
    rec = bytearray(records[i])
    pos = data.draw(st.integers(0, len(rec) - 1), label="byte")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != rec[pos]), label="value")
    rec[pos] = new
    view = verify_records("n", genesis, [*records[:i], bytes(rec), *records[i + 1 :]])
    assert view.height <= i and view.failure is not None
    assert view.failure.startswith(f"block {view.height + 1}:")
    if view.height:
        header = decode_canonical(records[view.height - 1])["block"]["header"]
        assert view.state.root.hex() == header["state_root"]


def test_altered_genesis_in_one_file_does_not_move_the_trust_root(
    demo_copy: Path, demo: DemoLedger
) -> None:
    conn = sqlite3.connect(demo_copy / "ledger-0.sqlite")
    with conn:
        (raw,) = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        g = decode_canonical(bytes(raw))
        g["f"] = 0  # a weaker roster quorum: 1 signature per block would do
        conn.execute("UPDATE meta SET value = ? WHERE key = 'genesis'", (canonical(g),))
    conn.close()
    source = DbSource(demo_copy)
    assert source.genesis == DbSource(demo.db_dir).genesis
    snap = source.snapshot()
    assert [node for node, _ in snap.failures] == ["ledger-0.sqlite"]
    assert "genesis record differs" in snap.failures[0][1]
    others = [v for v in snap.views if v.source != "ledger-0.sqlite"]
    assert snap.shown.ok and snap.shown.height == max(v.height for v in others) >= 9
