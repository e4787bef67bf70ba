"""The explorer's web app: Starlette routes, Jinja2 templates (autoescaped), GET only.

``create_app(source)`` serves a :class:`~kaires_fl.explorer.sources.DbSource` or
:class:`~kaires_fl.explorer.sources.GroupSource`; :func:`serve` runs it under uvicorn
(``kaires explorer``). Pages: ``/`` (chain), ``/block/{h}``, ``/job/{id}``,
``/provider/{policy id}``, ``/committees``, and ``/proof?key=…`` (a state proof as JSON,
checked before it is served). Every response forbids scripts and any request off this
origin (Content-Security-Policy), so a page makes no external network request; any method
but GET (and HEAD) answers 405.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

import kaires_fl.node.host  # noqa: F401  (registers every contract the nodes run: replay)
from kaires_fl import __version__
from kaires_fl.errors import AuditError, KairesError
from kaires_fl.explorer import pages
from kaires_fl.explorer.sources import Snapshot

TEMPLATES = Path(__file__).with_name("templates")

#: Headers of every response: no script at all, nothing loaded from elsewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Source(Protocol):
    mode: str

    def snapshot(self) -> Snapshot: ...


def _short(x: Any, n: int = 16) -> str:
    s = "" if x is None else str(x)
    return s if len(s) <= n else s[:n] + "…"


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short"] = _short
    env.filters["json"] = lambda v: v if isinstance(v, str) else json.dumps(v, default=str)
    env.filters["q"] = lambda s: quote(str(s), safe="")
    env.filters["qpath"] = lambda s: quote(str(s), safe="/")
    return env


def create_app(source: Source) -> Starlette:
    """The explorer app over ``source`` (read-only: GET routes only)."""
    env = _environment()

    def render(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        snap = ctx.pop("snap")
        html = env.get_template(name).render(
            verdict=pages.verdict(snap), version=__version__, **ctx
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def not_found(snap: Snapshot, what: str) -> HTMLResponse:
        return render("notfound.html", 404, snap=snap, what=what)

    def chain(request: Request) -> Response:
        snap = source.snapshot()
        try:
            page = int(request.query_params.get("page", "0"))
        except ValueError:
            page = 0
        return render("chain.html", snap=snap, c=pages.chain_page(snap, page))

    def block(request: Request) -> Response:
        snap = source.snapshot()
        b = pages.block_page(snap, request.path_params["height"])
        if b is None:
            return not_found(snap, f"block {request.path_params['height']} (not verified)")
        return render("block.html", snap=snap, b=b)

    def job(request: Request) -> Response:
        snap = source.snapshot()
        j = pages.job_page(snap, request.path_params["job"])
        if j is None:
            return not_found(snap, f"job {request.path_params['job']}")
        return render("job.html", snap=snap, j=j)

    def provider(request: Request) -> Response:
        snap = source.snapshot()
        p = pages.provider_page(snap, request.path_params["policy"])
        if p is None:
            return not_found(snap, f"provider policy {request.path_params['policy']}")
        return render("provider.html", snap=snap, p=p)

    def committees(request: Request) -> Response:
        snap = source.snapshot()
        return render("committees.html", snap=snap, c=pages.committees_page(snap))

    def proof(request: Request) -> Response:
        snap = source.snapshot()
        key = request.query_params.get("key", "")
        if not key or snap.shown.get(key) is None:
            return not_found(snap, f"state entry {key!r}")
        try:
            data = snap.shown.prove(key).to_bytes()
        except (AuditError, KairesError) as exc:
            return Response(
                f"proof does not verify: {exc}\n", 500, headers=SECURITY_HEADERS,
                media_type="text/plain",
            )  # fmt: skip
        name = "proof-" + "".join(c if c.isalnum() else "_" for c in key)[-80:] + ".json"
        return Response(
            data,
            media_type="application/json",
            headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        )

    def css(request: Request) -> Response:
        return Response(
            (TEMPLATES / "explorer.css").read_bytes(),
            media_type="text/css",
            headers=SECURITY_HEADERS,
        )

    routes = [
        Route("/", chain, methods=["GET"]),
        Route("/block/{height:int}", block, methods=["GET"]),
        Route("/job/{job}", job, methods=["GET"]),
        Route("/provider/{policy:path}", provider, methods=["GET"]),
        Route("/committees", committees, methods=["GET"]),
        Route("/proof", proof, methods=["GET"]),
        Route("/explorer.css", css, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def make_source(*, group: str | None = None, db: str | None = None) -> Source:
    """The source ``kaires explorer`` reads: exactly one of ``group`` and ``db``."""
    from kaires_fl.errors import ConfigError
    from kaires_fl.explorer.sources import DbSource, GroupSource

    if (group is None) == (db is None):
        raise ConfigError("kaires explorer needs exactly one of --group FILE and --db DIR")
    if group is not None:
        return GroupSource(group)
    assert db is not None
    return DbSource(os.fspath(db))


def serve(source: Source, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Run the explorer under uvicorn until interrupted (verifies once before listening)."""
    import uvicorn

    source.snapshot()  # verify from genesis before the first request (fail fast)
    uvicorn.run(create_app(source), host=host, port=port, log_level="warning")
