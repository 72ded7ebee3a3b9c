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
