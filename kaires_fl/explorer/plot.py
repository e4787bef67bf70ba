"""Server-rendered SVG plots (no script, no external asset): jobs per day per provider, and
the time between blocks. Every label is escaped here: the result is safe markup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from kaires_fl.ledger.darc import policy_owner

#: Colour-blind-safe palette (Okabe–Ito); the last colour is "other providers".
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 180, 16, 40


def day_of(time_ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of a Unix time in ms."""
    return datetime.fromtimestamp(time_ms / 1000, UTC).strftime("%Y-%m-%d")


def _empty(title: str) -> Markup:
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="60" role="img" '
        f'aria-label="{escape(title)}"><text x="8" y="30" font-size="13">{escape(title)}: '
        "no data yet</text></svg>"
    )


def legend(policy_id: str, width: int = 26) -> str:
    """A short legend label: an owner-bound id ``<name>.<64 hex>`` as ``<name> ·<6 hex>``."""
    owner = policy_owner(policy_id)
    if owner is None:
        return policy_id if len(policy_id) <= width else policy_id[: width - 1] + "…"
    name = policy_id[: -len(owner) - 1]
    name = name if len(name) <= width - 8 else name[: width - 9] + "…"
    return f"{name} ·{owner[:6]}"


def jobs_per_day(
    counts: Mapping[str, Mapping[str, int]], title: str = "jobs per day per provider"
) -> Markup:
    """Stacked bars: ``counts[day][provider]`` = jobs that used that provider's data that day.

    The 7 providers with the most jobs get their own colour, the rest are "other providers".
    """
    if not counts:
        return _empty(title)
    days = sorted(counts)
    totals: dict[str, int] = {}
    for per in counts.values():
        for prov, n in per.items():
            totals[prov] = totals.get(prov, 0) + n
    top = sorted(totals, key=lambda p: (-totals[p], p))[: len(PALETTE) - 1]
    series = [*top, "other providers"] if len(totals) > len(top) else top
    colour = {s: PALETTE[i] for i, s in enumerate(top)}
    colour["other providers"] = PALETTE[-1]
    peak = max(sum(per.values()) for per in counts.values())
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / len(days)
    bar = max(2.0, slot * 0.7)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{LEFT}" y="12" font-size="12">{escape(title)} (stacked; busiest day: '
        f"{peak} provider-jobs)</text>",
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#333"/>',
        f'<text x="{LEFT - 6}" y="{TOP + 10}" font-size="11" text-anchor="end">{peak}</text>',
        f'<text x="{LEFT - 6}" y="{TOP + ph}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar) / 2
        y: float = TOP + ph
        per = counts[day]
        stack = [(p, per.get(p, 0)) for p in top]
        stack.append(("other providers", sum(n for p, n in per.items() if p not in colour)))
        for prov, n in stack:
            if n <= 0:
                continue
            h = ph * n / peak
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour[prov]}"><title>{escape(day)} · {escape(prov)}: {n}</title></rect>'
            )
        if len(days) <= 12 or i in (0, len(days) - 1):
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{TOP + ph + 14}" font-size="10" '
                f'text-anchor="middle">{escape(day)}</text>'
            )
    for j, s in enumerate(series):
        ly = TOP + 4 + j * 16
        parts.append(
            f'<rect x="{W - RIGHT + 10}" y="{ly}" width="10" height="10" fill="{colour[s]}"/>'
            f'<text x="{W - RIGHT + 24}" y="{ly + 9}" font-size="11">{escape(legend(s))}'
            f"<title>{escape(s)}</title></text>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def block_times(times_ms: Sequence[int], first_height: int = 1, genesis_ms: int = 0) -> Markup:
    """Time from each block to the next (ms), one point per block, as a polyline.

    ``times_ms`` are the times of blocks ``first_height``, ``first_height + 1``, …;
    ``genesis_ms`` is the time before the first of them.
    """
    title = "time between blocks (ms)"
    if not times_ms:
        return _empty(title)
    prev = [genesis_ms, *times_ms[:-1]]
    gaps = [max(0, t - p) for t, p in zip(times_ms, prev, strict=True)]
    peak = max(max(gaps), 1)
    pw, ph = W - LEFT - 24, H - TOP - BOTTOM
    n = len(gaps)
    step = pw / max(n - 1, 1)
    pts = " ".join(
        f"{LEFT + i * step:.1f},{TOP + ph - ph * g / peak:.1f}" for i, g in enumerate(gaps)
    )
    last = first_height + n - 1
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{title}">'
        f'<text x="{LEFT}" y="12" font-size="12">{title}, blocks {first_height}–{last}; '
        f"peak {peak} ms</text>"
        f'<line x1="{LEFT}" y1="{TOP + ph}" x2="{LEFT + pw}" y2="{TOP + ph}" stroke="#333"/>'
        f'<text x="{LEFT - 6}" y="{TOP + 10}" font-size="11" text-anchor="end">{peak}</text>'
        f'<text x="{LEFT - 6}" y="{TOP + ph}" font-size="11" text-anchor="end">0</text>'
        f'<polyline points="{pts}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>'
        f'<text x="{LEFT}" y="{TOP + ph + 14}" font-size="10">block {first_height}</text>'
        f'<text x="{LEFT + pw}" y="{TOP + ph + 14}" font-size="10" text-anchor="end">'
        f"block {last}</text></svg>"
    )
