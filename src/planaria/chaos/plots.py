"""Jepsen-style plots of a run (matplotlib, Agg backend, PNG files): the latency of every
operation over time and the throughput over time, colored by outcome, fault windows shaded
and labelled."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from planaria.chaos.results import CompletedOp, FaultRecord
from planaria.errors import MissingExtra

__all__ = ["OUTCOME_COLORS", "plot_run"]

OUTCOME_COLORS: Final = {"ok": "#2a9d3a", "fail": "#d62728", "info": "#e6a100"}
_FAULT_COLORS: Final = {"kill": "#d62728", "pause": "#1f77b4", "partition": "#9467bd"}
_BIN_S: Final = 0.5


def _shade(axes: Any, faults: Sequence[FaultRecord]) -> None:
    for fault in faults:
        color = _FAULT_COLORS.get(fault.kind, "#777777")
        axes.axvspan(fault.start_s, fault.end_s, color=color, alpha=0.12, lw=0)
        axes.annotate(
            f"{fault.kind} {fault.node}",
            xy=(fault.start_s, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            color=color,
            va="bottom",
        )


def plot_run(
    ops: Sequence[CompletedOp], faults: Sequence[FaultRecord], out_dir: Path, title: str
) -> list[Path]:
    """Write ``latency.png`` and ``throughput.png`` into ``out_dir``; their paths."""
    try:
        import matplotlib  # noqa: PLC0415 -- heavy; only when plotting
    except ImportError as exc:
        raise MissingExtra("matplotlib", "chaos") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    end_s = max([op.completed_s or op.invoked_s for op in ops] + [f.end_s for f in faults] + [1.0])
    paths: list[Path] = []

    figure, axes = plt.subplots(figsize=(12, 4.5))
    for outcome, color in OUTCOME_COLORS.items():
        chosen = [op for op in ops if op.type == outcome and op.latency_s is not None]
        axes.scatter(
            [op.invoked_s for op in chosen],
            [max(op.latency_s or 0.0, 1e-4) * 1000 for op in chosen],
            s=3,
            color=color,
            label=f"{outcome} ({len(chosen)})",
            alpha=0.6,
            linewidths=0,
        )
    _shade(axes, faults)
    if any(op.latency_s is not None for op in ops):
        axes.set_yscale("log")  # not of nothing: matplotlib refuses an empty log axis
    axes.set_xlim(0, end_s)
    axes.set_xlabel("time (s)")
    axes.set_ylabel("latency (ms)")
    axes.set_title(f"{title}: latency of every operation", pad=14)
    axes.legend(loc="upper right", markerscale=4, fontsize=8)
    figure.tight_layout()
    paths.append(out_dir / "latency.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(12, 4.5))
    bins = int(end_s / _BIN_S) + 1
    edges = [i * _BIN_S for i in range(bins)]
    for outcome, color in OUTCOME_COLORS.items():
        counts = [0] * bins
        for op in ops:
            if op.type == outcome and op.completed_s is not None:
                counts[min(bins - 1, int(op.completed_s / _BIN_S))] += 1
        axes.plot(edges, [c / _BIN_S for c in counts], color=color, label=outcome, lw=1.2)
    _shade(axes, faults)
    axes.set_xlim(0, end_s)
    axes.set_xlabel("time (s)")
    axes.set_ylabel(f"operations/s (completed, {_BIN_S:g} s bins)")
    axes.set_title(f"{title}: throughput", pad=14)
    axes.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    paths.append(out_dir / "throughput.png")
    figure.savefig(paths[-1], dpi=110)
    plt.close(figure)
    return paths
