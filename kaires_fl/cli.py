"""The ``kaires`` command.

``kaires demo``, ``kaires bench --json``, ``kaires --version``, the committee files
(``kaires node setup``, ``kaires group``, ``kaires committee init``) and the running
committee (``kaires node run``, ``kaires committee up / down / status``, ``kaires audit``);
see docs/deployment.md. ``kaires explorer`` serves the audit explorer (docs/explorer.md). A
configuration error prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kaires_fl import __version__
from kaires_fl.errors import AuditError, KairesError

if TYPE_CHECKING:
    from kaires_fl.node.config import Group

#: Exit status of a usage or configuration error.
EXIT_CONFIG = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _bench(args: argparse.Namespace) -> int:
    from kaires_fl import bench

    valid = (*bench.AREAS, *getattr(bench, "ON_DEMAND", ()))
    areas = None if args.only is None else tuple(a.strip() for a in args.only.split(","))
    unknown = [a for a in areas or () if a not in valid]
    if unknown:
        print(
            f"kaires bench: error: unknown area(s) {', '.join(map(repr, unknown))} in --only;"
            f" valid areas: {', '.join(valid)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    result = bench.run(areas, quick=args.quick)
    result["machine"] = {
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(bench_table(result))
    return 0


def _figure(value: float) -> str:
    """A figure with 4 significant digits, thousands separated (no raw float repr)."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def bench_table(result: dict[str, Any]) -> str:
    """``kaires bench``'s table: metric, value, unit, target, one-line meaning; then the
    machine. Pre: ``result`` as returned by :func:`kaires_fl.bench.run` (+ ``machine``)."""
    from kaires_fl.bench import describe

    rows = [("metric", "value", "unit", "target", "meaning")]
    for key, value in sorted(result.items()):
        if key == "machine":
            continue
        unit, target, meaning = describe(key)
        shown = _figure(float(value)) if isinstance(value, int | float) else str(value)
        rows.append((key, shown, unit, target, meaning))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:<{widths[2]}}  "
        f"{r[3]:<{widths[3]}}  {r[4]}".rstrip()
        for r in rows
    ]
    lines.insert(1, "-" * max(len(line) for line in lines))
    machine = result.get("machine")
    if isinstance(machine, dict):
        lines.append("")
        lines.append("machine: " + ", ".join(f"{k} {v}" for k, v in sorted(machine.items())))
    lines.append("targets: a stated goal, or the better direction; --json for raw figures")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from kaires_fl import demo

    return demo.main(quiet=args.quiet, network=args.network)


def _node_setup(args: argparse.Namespace) -> int:
    from kaires_fl.node.config import PUBLIC_FILE, setup_node

    entry = setup_node(args.dir, args.address, args.roles, args.name)
    print(f"node {entry.name}: {Path(args.dir) / PUBLIC_FILE} (roles {','.join(entry.roles)})")
    print(f"sign key {entry.sign}")
    return 0


def _print_group(group: Group, out: Path) -> None:
    from kaires_fl.node.host import group_genesis

    print(f"group {out}: {len(group.nodes)} nodes, id {group.id}")
    print(f"chain id {group_genesis(group).chain_id}")
    print(f"committee id {group.committee_id}")


def _group(args: argparse.Namespace) -> int:
    from kaires_fl.node.config import load_public, make_group, write_group

    entries = [load_public(p) for p in args.public]
    group = make_group(
        entries,
        args.threshold,
        args.trustee_threshold,
        registration=args.registration,
        name=args.name,
    )
    write_group(group, args.out)
    _print_group(group, Path(args.out))
    return 0


def _committee_init(args: argparse.Namespace) -> int:
    from kaires_fl.errors import ConfigError
    from kaires_fl.node.config import make_group, setup_node, write_group

    n, base = args.nodes, args.base_port
    if n < 1:
        raise ConfigError(f"--nodes {n}: a committee needs at least one node")
    if base < 1 or base + n - 1 > 65535:
        raise ConfigError(f"--base-port {base}: ports {base}..{base + n - 1} must be in 1..65535")
    root = Path(args.dir)
    existing = [root / f"node-{i}" for i in range(n) if (root / f"node-{i}").exists()]
    if existing or (root / "group.toml").exists():
        where = existing[0] if existing else root / "group.toml"
        raise ConfigError(f"{where} already exists; use an empty --dir (nothing is overwritten)")
    created: list[Path] = []
    try:
        entries = []
        for i in range(n):
            created.append(root / f"node-{i}")
            entries.append(
                setup_node(created[-1], f"{args.host}:{base + i}", args.roles, f"node-{i}")
            )
        group = make_group(
            entries, args.threshold, args.trustee_threshold, registration=args.registration
        )
        write_group(group, root / "group.toml")
    except BaseException:
        for d in created:  # only what this command created: nothing half-made is left
            shutil.rmtree(d, ignore_errors=True)
        raise
    _print_group(group, root / "group.toml")
    return 0


def _node_run(args: argparse.Namespace) -> int:
    from kaires_fl.node.process import configure_logging, run_node

    configure_logging()
    return run_node(args.dir, args.group)


def _committee_up(args: argparse.Namespace) -> int:
    from kaires_fl.node.process import committee_up

    return committee_up(args.dir, detach=args.detach, timeout=args.timeout)


def _committee_down(args: argparse.Namespace) -> int:
    from kaires_fl.node.process import committee_down

    return committee_down(args.dir, grace=args.grace)


def _committee_status(args: argparse.Namespace) -> int:
    from kaires_fl.node.process import committee_status

    return committee_status(args.group, timeout=args.timeout)


def _audit(args: argparse.Namespace) -> int:
    from kaires_fl.node.process import audit

    return audit(args.group, args.provider, timeout=args.timeout)


def _add_group_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threshold",
        type=int,
        default=None,
        help="aggregators' Shamir degree t (n_aggregators >= 3t+1; default (n-1)//3)",
    )
    p.add_argument(
        "--trustee-threshold",
        type=int,
        default=None,
        help="trustees' threshold (n_trustees >= 2t+1; default max(1, (n-1)//3))",
    )
    p.add_argument(
        "--registration",
        action="store_true",
        help="providers and consumers must be admitted by the ledger roster",
    )


def _explorer(args: argparse.Namespace) -> int:
    from kaires_fl.explorer.app import make_source, serve

    source = make_source(group=args.group, db=args.db)
    print(f"kaires explorer: http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    serve(source, args.host, args.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kaires`` console script."""
    parser = _Parser(prog="kaires", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kaires {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_demo = sub.add_parser("demo", help="run one whole Kaires job in-process and audit it")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bar")
    p_demo.add_argument(
        "--network",
        action="store_true",
        help="against a fresh local committee of 4 node processes (stopped at the end)",
    )
    p_demo.set_defaults(func=_demo)

    p_bench = sub.add_parser("bench", help="run the benchmarks")
    p_bench.add_argument("--json", action="store_true", help="print one JSON object")
    p_bench.add_argument("--only", help="comma-separated areas (field,flp,group,ledger,...)")
    p_bench.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    p_bench.set_defaults(func=_bench)

    p_node = sub.add_parser("node", help="one node: set up its keys")
    node_sub = p_node.add_subparsers(dest="node_command", required=True, parser_class=_Parser)
    p_setup = node_sub.add_parser(
        "setup", help="create DIR/private.toml (0600) and DIR/public.toml for one node"
    )
    p_setup.add_argument("--dir", required=True, help="the node directory (created)")
    p_setup.add_argument("--address", required=True, help="HOST:PORT the node listens on")
    p_setup.add_argument(
        "--roles", default="ledger,trustee,aggregator", help="comma-separated roles"
    )
    p_setup.add_argument("--name", default=None, help="node name (default: the directory name)")
    p_setup.set_defaults(func=_node_setup)
    p_run = node_sub.add_parser(
        "run", help="run one node in the foreground (SIGTERM/SIGINT stop it; logs on stderr)"
    )
    p_run.add_argument("--dir", required=True, help="the node directory (kaires node setup)")
    p_run.add_argument("--group", required=True, help="the committee's group.toml")
    p_run.set_defaults(func=_node_run)

    p_group = sub.add_parser("group", help="combine public.toml files into a group.toml")
    p_group.add_argument("public", nargs="+", help="the nodes' public.toml files, in order")
    p_group.add_argument("--out", required=True, help="the group file to write")
    p_group.add_argument("--name", default="kaires", help="committee name")
    _add_group_options(p_group)
    p_group.set_defaults(func=_group)

    p_comm = sub.add_parser("committee", help="a committee on one machine")
    comm_sub = p_comm.add_subparsers(dest="committee_command", required=True, parser_class=_Parser)
    p_init = comm_sub.add_parser(
        "init", help="create DIR/node-0 … node-{N-1} and DIR/group.toml (one machine)"
    )
    p_init.add_argument("--dir", required=True, help="the committee directory")
    p_init.add_argument("--nodes", type=int, required=True, help="number of nodes N")
    p_init.add_argument("--base-port", type=int, default=7770, help="port of node-0 (default 7770)")
    p_init.add_argument("--host", default="127.0.0.1", help="host of every node")
    p_init.add_argument("--roles", default="ledger,trustee,aggregator", help="roles of every node")
    _add_group_options(p_init)
    p_init.set_defaults(func=_committee_init)
    p_up = comm_sub.add_parser(
        "up", help="start one process per node of DIR; return when the committee is ready"
    )
    p_up.add_argument("--dir", required=True, help="the committee directory (committee init)")
    p_up.add_argument(
        "--detach", action="store_true", help="leave the nodes running and return once ready"
    )
    p_up.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for readiness (120)"
    )
    p_up.set_defaults(func=_committee_up)
    p_down = comm_sub.add_parser("down", help="stop the nodes of DIR (pid files)")
    p_down.add_argument("--dir", required=True, help="the committee directory")
    p_down.add_argument(
        "--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL (10)"
    )
    p_down.set_defaults(func=_committee_down)
    p_status = comm_sub.add_parser(
        "status", help="each node's status; exit status 1 if the committee is not live"
    )
    p_status.add_argument("--group", required=True, help="the committee's group.toml")
    p_status.add_argument(
        "--timeout", type=float, default=3.0, help="seconds to wait for answers (3)"
    )
    p_status.set_defaults(func=_committee_status)

    p_audit = sub.add_parser(
        "audit", help="verify the chain from genesis through a live node; list accesses"
    )
    p_audit.add_argument("--group", required=True, help="the committee's group.toml")
    p_audit.add_argument("--provider", default=None, help="a provider's POLICY_ID")
    p_audit.add_argument(
        "--timeout", type=float, default=30.0, help="seconds a node may take to answer (30)"
    )
    p_audit.set_defaults(func=_audit)

    p_expl = sub.add_parser(
        "explorer", help="a read-only web page of the ledger, verified from genesis here"
    )
    src = p_expl.add_mutually_exclusive_group(required=True)
    src.add_argument("--group", help="a deployed committee's group.toml")
    src.add_argument("--db", help="the db_dir of a LocalCommittee (ledger-<i>.sqlite files)")
    p_expl.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p_expl.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    p_expl.set_defaults(func=_explorer)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except AuditError as exc:
        print(f"kaires: audit failed: {exc}", file=sys.stderr)
        return 1
    except KairesError as exc:
        print(f"kaires: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"kaires: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
