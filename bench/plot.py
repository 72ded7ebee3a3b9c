"""The bench's picture: throughput against worker count, and CPU per task per system.

matplotlib is a bench dependency only (``pip install matplotlib`` or
``pip install -e '.[bench]'``), never clawd's; without it the bench says so and skips
the picture.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

#: colours per system, the same in both panels
COLOURS = {
    "clawd": "#1f77b4",
    "raw": "#7f7f7f",
    "celery": "#2ca02c",
    "celery-rabbitmq": "#bcbd22",
    "dramatiq": "#d62728",
    "rq": "#9467bd",
}
NAMES = {
    "clawd": "clawd",
    "raw": "raw paho 4-hop",
    "celery": "Celery + Redis",
    "celery-rabbitmq": "Celery + RabbitMQ",
    "dramatiq": "Dramatiq + Redis",
    "rq": "RQ + Redis",
}
#: the systems of the CPU-per-task panel, in order
CPU_SYSTEMS = ("raw", "clawd", "celery", "celery-rabbitmq", "dramatiq", "rq")
#: the task duration of the uniform scale-out workload (bench/scaleout.py)
UNIFORM_SECONDS = 0.05


def available() -> str | None:
    """None when matplotlib can be imported, else why not."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); pip install matplotlib"
    return None


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def plot_results(results: dict[str, Any], path: Path) -> Path:
    """Write a PNG of whatever ``results`` hold: ``scaleout``, ``realistic``, and the
    CPU per task of every system's no-op throughput runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = results.get("scaleout") or {}
    real = results.get("realistic") or {}
    panels = [p for p in ("scaleout", "realistic") if results.get(p)]
    if any("cpu_us" in (results.get(s) or {}) for s in CPU_SYSTEMS):
        panels.append("systems")
    if not panels:
        raise ValueError("nothing to plot: no scale-out, realistic-path or CPU results")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "scaleout":
            _throughput_panel(ax, scale)
        elif panel == "realistic":
            _cpu_panel(ax, real)
        else:
            _systems_panel(ax, results)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _throughput_panel(ax: Any, scale: dict[str, Any]) -> None:
    ns: list[int] = []
    for system, rows in scale.items():
        if not isinstance(rows, dict) or "skipped" in rows:
            continue
        points = sorted((int(n), row) for n, row in rows.items() if "uniform" in row)
        if not points:
            continue
        xs = [n for n, _ in points]
        ys = [_median(row["uniform"]["efficiency"]) * n / UNIFORM_SECONDS for n, row in points]
        ns = sorted(set(ns) | set(xs))
        ax.plot(xs, ys, "o-", color=COLOURS.get(system), label=NAMES.get(system, system))
    if ns:
        ax.plot(ns, [n / UNIFORM_SECONDS for n in ns], "kx:", label="ideal (N / 50 ms)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("worker processes (1 slot each)")
    ax.set_ylabel("tasks/s (median)")
    ax.set_title("scale-out: 50 ms sleeping tasks, 50 per worker")
    ax.grid(alpha=0.3)
    ax.legend()


def _cpu_panel(ax: Any, real: dict[str, Any]) -> None:
    roles = ("producer", "broker", "distributor", "workers")
    shades = {"producer": "#c7c7c7", "broker": "#ffbb78", "distributor": "#1f77b4",
              "workers": "#aec7e8"}  # fmt: skip
    systems = [s for s in ("raw", "clawd", "celery", "dramatiq") if s in real]
    bottoms = [0.0] * len(systems)
    for role in roles:
        heights = [_median(real[s]["cpu_us"].get(role, [])) for s in systems]
        ax.bar(
            [NAMES.get(s, s) for s in systems],
            heights,
            bottom=bottoms,
            color=shades[role],
            label="distributor (raw: dispatcher)" if role == "distributor" else role,
        )
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for i, (s, top) in enumerate(zip(systems, bottoms, strict=True)):
        total = _median(real[s]["cpu_us"].get("total", [])) or top
        ax.text(i, top, f"{total:.0f} (median total)", ha="center", va="bottom")
    ax.set_ylabel("CPU µs per task, all processes (medians by process)")
    ax.set_title("realistic path: compute tasks, window 500")
    ax.legend()


def _systems_panel(ax: Any, results: dict[str, Any]) -> None:
    systems = [s for s in CPU_SYSTEMS if "cpu_us" in (results.get(s) or {})]
    totals = [_median(results[s]["cpu_us"].get("total", [])) for s in systems]
    ax.bar(
        [NAMES.get(s, s).replace(" + ", "\n+ ") for s in systems],
        totals,
        color=[COLOURS.get(s, "#333333") for s in systems],
    )
    for i, total in enumerate(totals):
        ax.text(i, total, f"{total:,.0f}", ha="center", va="bottom")
    ax.set_yscale("log")
    ax.set_ylabel("CPU µs per task, all processes (median, log scale)")
    ax.set_title("no-op tasks: CPU per task per system")


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.plot OUT.png RESULTS.json...``: a plot from saved ``--json`` files
    (later files add to and override earlier ones, system by system)."""
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        raise SystemExit("usage: python -m bench.plot OUT.png RESULTS.json...")
    merged: dict[str, Any] = {}
    for name in args[1:]:
        doc = json.loads(Path(name).read_text())
        for key, value in doc.get("results", doc).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
    print(plot_results(merged, Path(args[0])))


if __name__ == "__main__":
    main()
