"""The ``kaires`` command: ``kaires demo``, ``kaires bench --json``."""

from __future__ import annotations

import argparse
import json
import platform
import sys


def _bench(args: argparse.Namespace) -> int:
    from kaires_fl import bench

    areas = tuple(args.only.split(",")) if args.only else None
    result = bench.run(areas, quick=args.quick)
    result["machine"] = {
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpus": __import__("os").cpu_count(),
    }
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        for key, value in sorted(result.items()):
            print(f"{key:32s} {value}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from kaires_fl import demo

    return demo.main(quiet=args.quiet)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kaires`` console script."""
    parser = argparse.ArgumentParser(prog="kaires", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_demo = sub.add_parser("demo", help="run one whole Kaires job in-process and audit it")
    p_demo.add_argument("--quiet", action="store_true", help="no progress bar")
    p_demo.set_defaults(func=_demo)

    p_bench = sub.add_parser("bench", help="run the benchmarks")
    p_bench.add_argument("--json", action="store_true", help="print one JSON object")
    p_bench.add_argument("--only", help="comma-separated areas (field,flp,group,ledger,...)")
    p_bench.add_argument("--quick", action="store_true", help="smaller sizes, for smoke tests")
    p_bench.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
