"""Report plots as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot`` (no global figure state, safe in any thread, no display needed). Each function
takes plain values and returns the PNG of one figure.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c", "#ccb974", "#64b5cd")


def _figure(width_in: float = 7.0, height_in: float = 4.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return buf.getvalue()


def share_and_energy(labels: Sequence[str], co2e_kg: Sequence[float], energy_kwh: Sequence[float]) -> bytes:
    """Left: each phase's share of the CO2e (operational + embodied), in %; right: its energy."""
    fig = _figure(10.0, 0.45 * len(labels) + 1.8)
    left, right = fig.subplots(1, 2, sharey=True)
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(labels))]
    total = sum(co2e_kg)
    shares = [v / total * 100.0 if total > 0 else 0.0 for v in co2e_kg]
    left.barh(list(labels), shares, color=colors)
    for y, share in enumerate(shares):
        left.annotate(f"{share:.1f}%", (share, y), textcoords="offset points", xytext=(3, 0), va="center", fontsize=8)
    left.invert_yaxis()
    left.set_xlim(0, max([*shares, 1.0]) * 1.2)
    left.set_xlabel("share of CO2e (%)")
    left.set_title("Share of CO2e by phase")
    right.barh(list(labels), list(energy_kwh), color=colors)
    right.set_xlabel("energy (kWh)")
    right.set_title("Energy by phase")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def water_by_phase(labels: Sequence[str], water_l: Sequence[float]) -> bytes:
    fig = _figure(7.0, 0.45 * len(labels) + 1.8)
    ax = fig.subplots()
    ax.barh(list(labels), list(water_l), color="#64b5cd")
    ax.invert_yaxis()
    ax.set_xlabel("water (L)")
    ax.set_title("Water by phase")
    return _png(fig)


def cumulative_co2(times: Sequence[Any], co2_kg: Sequence[float]) -> bytes:
    """Cumulative measured CO2 (kg) at the end of each hour (``times``: datetimes)."""
    fig = _figure()
    ax = fig.subplots()
    ax.plot(list(times), list(co2_kg), color="#c44e52", linewidth=2, marker="o" if len(times) < 50 else None, markersize=3)
    ax.fill_between(list(times), list(co2_kg), alpha=0.2, color="#c44e52")
    ax.set_ylabel("CO2e (kg)")
    ax.set_title("Cumulative measured CO2e over time (UTC)")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def comparison_bars(labels: Sequence[str], energy: Sequence[float | None], co2: Sequence[float | None],
                    energy_label: str, co2_label: str, baseline: int = 0) -> bytes:
    """Energy and CO2 side by side per run (or job); the baseline's bars are hatched."""
    fig = _figure(max(6.0, 1.2 * len(labels) + 3), 4.5)
    left, right = fig.subplots(1, 2)
    xs = list(range(len(labels)))
    for ax, values, title, color in ((left, energy, energy_label, "#4c72b0"), (right, co2, co2_label, "#c44e52")):
        bars = ax.bar(xs, [v or 0.0 for v in values], color=color)
        if 0 <= baseline < len(bars):
            bars[baseline].set_hatch("//")
            bars[baseline].set_edgecolor("black")
        ax.set_xticks(xs, list(labels), rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def pareto(labels: Sequence[str], energy: Sequence[float], metric: Sequence[float], front: Sequence[bool],
           energy_label: str, metric_label: str, maximize: bool = True) -> bytes:
    """Energy (x) against a metric (y); Pareto-optimal points joined by a line."""
    fig = _figure()
    ax = fig.subplots()
    others = [i for i in range(len(labels)) if not front[i]]
    best = sorted((i for i in range(len(labels)) if front[i]), key=lambda i: energy[i])
    ax.scatter([energy[i] for i in others], [metric[i] for i in others], color="#8c8c8c", label="dominated", zorder=2)
    ax.scatter([energy[i] for i in best], [metric[i] for i in best], color="#55a868", label="Pareto-optimal", zorder=3)
    if len(best) > 1:
        ax.plot([energy[i] for i in best], [metric[i] for i in best], color="#55a868", zorder=1)
    for i, label in enumerate(labels):
        ax.annotate(label, (energy[i], metric[i]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(energy_label)
    ax.set_ylabel(f"{metric_label} ({'higher' if maximize else 'lower'} is better)")
    ax.set_title("Energy vs " + metric_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
