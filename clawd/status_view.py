"""Rendering ``clawd status``: workers, lanes and rates as rich tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def render(snap: dict[str, Any]) -> Group:
    m = snap.get("metrics") or {}
    parts: list[Any] = []
    if not m:
        parts.append(Text("no metrics yet: is a distributor running?", style="yellow"))
    workers = Table(
        "worker", "state", "load", "capacity", "done", "handlers", "capabilities", title="workers"
    )
    live = m.get("workers", {})
    for wid, st in sorted(snap.get("workers", {}).items()):
        lm = live.get(wid, {})
        workers.add_row(
            wid,
            st.get("state", "?"),
            str(lm.get("in_flight", st.get("in_flight", 0))),
            str(st.get("capacity", 0)),
            str(lm.get("done", "")),
            ", ".join(st.get("handlers", [])),
            ", ".join(st.get("capabilities", [])),
        )
    parts.append(workers)
    if m:
        lanes = Table("lane", "weight", "depth", "oldest (s)", "served", title="lanes")
        for name, ln in m.get("lanes", {}).items():
            lanes.add_row(
                name,
                str(ln["weight"]),
                str(ln["depth"]),
                f"{ln['oldest_age']:.1f}",
                str(ln["served"]),
            )
        parts.append(lanes)
        breakers = m.get("breakers") or {}
        rows = [(f"type/{k}", v) for k, v in breakers.get("types", {}).items()]
        rows += [(f"worker/{k}", v) for k, v in breakers.get("workers", {}).items()]
        rows += [
            (f"eject/{k}", {"state": "ejected", "retry_in": v})
            for k, v in breakers.get("ejected", {}).items()
        ]
        if rows:
            table = Table("breaker", "state", "failure rate", "calls", "rejected", title="breakers")
            for key, b in sorted(rows):
                table.add_row(
                    key,
                    b.get("state", ""),
                    f"{b.get('failure_rate', 0):.2f}",
                    str(b.get("calls", "")),
                    str(b.get("rejected", "")),
                )
            parts.append(table)
        if m.get("routes"):
            parts.append(routes_table(m["routes"]))
        rates = m.get("rates", {})
        totals = Table("counter", "total", "per s", title="tasks")
        for k, v in sorted(m.get("counters", {}).items()):
            totals.add_row(k, str(v), str(rates.get(k, 0)))
        parts.append(totals)
        parts.append(
            Text(
                f"in flight {m.get('in_flight', 0)}, delayed {m.get('delayed', 0)}, "
                f"distributed {m.get('distributed', 0)}, avg distribution "
                f"{m.get('avg_distribution_ms', 0)} ms"
            )
        )
    return Group(*parts)


def render_fitted(snap: dict[str, Any], width: int = 80, height: int = 24) -> Group:
    """``status --watch``: the same facts in at most ``height`` lines of ``width`` columns.

    Lanes, task counters and breakers take one line each; the workers get the rest of the
    screen, busiest first, and a last line says how many did not fit.
    """
    m = snap.get("metrics") or {}
    workers = snap.get("workers", {})
    online = sum(1 for w in workers.values() if w.get("state") == "online")
    lines = [
        f"clawd: {m.get('in_flight', 0)} in flight, {m.get('delayed', 0)} delayed, "
        f"workers {online} online / {len(workers)}"
        if m
        else "no metrics yet: is a distributor running?"
    ]
    if m:
        lanes = m.get("lanes", {})
        lines.append(
            "lanes: "
            + "  ".join(
                f"{n} {ln['depth']} queued ({ln['oldest_age']:.1f} s)" for n, ln in lanes.items()
            )
        )
        rates = m.get("rates", {})
        counters = "  ".join(
            f"{k} {v}" + (f" ({rates[k]}/s)" if rates.get(k) else "")
            for k, v in sorted(m.get("counters", {}).items())
        )
        lines.append("tasks: " + (counters or "none yet"))
        b = m.get("breakers") or {}
        tripped = [
            f"{kind}/{k} {v.get('state')}"
            for kind in ("types", "workers")
            for k, v in sorted(b.get(kind, {}).items())
            if v.get("state") != "closed"
        ] + [f"eject/{k}" for k in sorted(b.get("ejected", {}))]
        lines.append("breakers: " + (", ".join(tripped) if tripped else "all closed"))
    parts: list[Any] = [Text(line, no_wrap=True, overflow="ellipsis") for line in lines]
    live = m.get("workers", {})
    room = height - len(lines) - 2  # the header, and a line for "... more"
    rows = sorted(
        workers.items(),
        key=lambda kv: (kv[1].get("state") != "online", -int(kv[1].get("in_flight") or 0), kv[0]),
    )
    cells = []
    for wid, st in rows[: max(room, 0)]:
        lm = live.get(wid, {})
        cells.append(
            (
                wid,
                str(st.get("state", "?")),
                str(lm.get("in_flight", st.get("in_flight", 0))),
                str(st.get("capacity", 0)),
                str(lm.get("done", "")),
                ", ".join(st.get("handlers", [])),
            )
        )
    headers = ("worker", "state", "load", "cap", "done", "handlers")
    widths = [min(24, max([len(c[i]) for c in cells] + [len(headers[i])])) for i in range(5)]
    widths.append(max(8, width - sum(widths) - 11))  # 5 gaps of 2, and the last column free
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, w in zip(headers, widths, strict=True):
        table.add_column(header, width=w, no_wrap=True)
    for row in cells:
        table.add_row(*(_cut(text, w) for text, w in zip(row, widths, strict=True)))
    parts.append(table)
    if len(rows) > room:
        parts.append(Text(f"... and {len(rows) - room} more workers (clawd status lists all)"))
    return Group(*parts)


def plugin_table(rows: list[dict[str, Any]], width: int = 80) -> Table:
    """``clawd plugins``: one line per plugin in ``width`` columns; a cut cell ends in "…"
    (``--json`` has everything)."""
    cells: list[tuple[str, ...]] = []
    for r in rows:
        source = r["source"]
        if source.startswith("entry point "):
            source = source.removeprefix("entry point ")
        else:
            source = source.rsplit("/", 1)[-1]  # a drop-in: its file name
        hooks = [h.removeprefix("clawd_") for h in r["hooks"]]
        hooks = [h for h in hooks if h not in ("register_handlers", "register_strategies")]
        cells.append(
            (r["name"], source, ", ".join([*r["handlers"], *r["strategies"]]), ", ".join(hooks))
        )
    headers = ("plugin", "from", "registers", "hooks")

    def need(i: int) -> int:
        return max([len(c[i]) for c in cells] + [len(headers[i])])

    # names and sources keep their width (up to a limit); the two lists share the rest
    widths = [min(need(0), 16), min(need(1), 26)]
    rest = max(16, width - sum(widths) - 7)  # 3 gaps of 2, and the last column free
    hooks_width = min(need(3), rest // 2)
    widths += [rest - hooks_width, hooks_width]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, w in zip(headers, widths, strict=True):
        table.add_column(header, width=w, no_wrap=True)
    for row in cells:
        table.add_row(*(_cut(text, w) for text, w in zip(row, widths, strict=True)))
    return table


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def routes_table(rules: list[dict[str, Any]]) -> Table:
    """The routing rules in force, highest priority first, with their hits."""
    table = Table(
        "rule",
        "priority",
        "match",
        "target",
        "lanes/types",
        "scope",
        "expires",
        "hits",
        title="routes",
    )
    for r in rules:
        target = r.get("target", "")
        exp = r.get("expires_at")
        table.add_row(
            r["id"],
            str(r.get("priority", 0)),
            r.get("match") or "(any)",
            target if isinstance(target, str) else ", ".join(target),
            ", ".join([*r.get("lanes", []), *r.get("types", [])]),
            r.get("scope") or "",
            time.strftime("%H:%M:%S", time.localtime(exp)) if exp else "",
            str(r.get("hits", 0)),
        )
    return table
