"""The explorer in a real headless Chromium (Debian's package, driven by Playwright) against
``kaires explorer --db`` running as a child process on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from kaires_fl.explorer.screenshots import (
    MARKUP_ID,
    DemoLedger,
    chromium_missing,
    launch_chromium,
    running_explorer,
    tamper_block,
)
from kaires_fl.explorer.sources import DbSource
from kaires_fl.ledger.audit import StateProof

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def url(demo: DemoLedger) -> Iterator[str]:
    with running_explorer(demo.db_dir) as base:
        yield base


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    """A fresh page that records every request it makes (all must stay on the explorer)."""
    context = browser.new_context(accept_downloads=True)
    p = context.new_page()
    requests: list[str] = []
    p.on("request", lambda req: requests.append(req.url))
    try:
        yield p
    finally:
        assert requests and all(u.startswith(url + "/") for u in requests), requests
        context.close()


def test_job_page_shows_rejected_provider_and_byzantine_aggregator(
    page: Any, url: str, demo: DemoLedger
) -> None:
    page.goto(f"{url}/job/{demo.job}")
    assert "verified from genesis: yes" in page.inner_text("#verdict")
    rejected = page.inner_text("#rejected")
    assert demo.rejected in rejected and demo.rejected_reason in rejected
    faulty = page.inner_text("#faulty")
    assert str(demo.faulty_index) in faulty and demo.faulty_reason in faulty
    assert f"faulty: {demo.faulty_reason}" in page.inner_text("#aggregators")


def test_provider_page_lists_access_with_proof_verified(
    page: Any, url: str, demo: DemoLedger
) -> None:
    page.goto(f"{url}/provider/{demo.provider}")
    row = page.locator("#accesses tr", has_text=demo.job[:16])
    assert row.count() == 1
    assert "proof verified" in row.inner_text()
    with page.expect_download() as info:
        row.get_by_text("download proof").click()
    data = Path(info.value.path()).read_bytes()
    proof = StateProof.from_bytes(data)
    assert proof.key == f"access/{demo.provider}/{demo.job}"
    assert proof.verify(DbSource(demo.db_dir).genesis)["job"] == demo.job


def test_markup_in_a_ledger_value_renders_as_text_and_never_runs(
    page: Any, url: str, demo: DemoLedger
) -> None:
    for path in (f"/job/{demo.markup_job}", "/provider/" + quote(MARKUP_ID, safe="/")):
        page.goto(url + path)
        assert MARKUP_ID in page.inner_text("main")
        assert page.evaluate("typeof window.__kaires_xss") == "undefined"
        assert page.locator("main script, main img").count() == 0
    assert MARKUP_ID in page.inner_text("#policy-id")


def test_chain_page_names_the_tampered_node_and_block(browser: Any, demo_copy: Path) -> None:
    tamper_block(demo_copy / "ledger-1.sqlite", 3)
    with running_explorer(demo_copy) as base:
        context = browser.new_context()
        try:
            p = context.new_page()
            p.goto(base + "/")
            verdict = p.inner_text("#verdict")
            assert "verified from genesis: no" in verdict
            assert "ledger-1.sqlite: block 3: block transactions/results do not match" in verdict
            nodes = p.inner_text("#nodes")
            assert "ledger-0.sqlite" in nodes and "verified from genesis" in nodes
        finally:
            context.close()
