"""Plot one quality indicator over time (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from exchange.quality.indicators import INDICATORS, EpisodeFacts, counts


def monthly_scores(rule_code: str, facts: Iterable[EpisodeFacts]) -> list[tuple[str, float]]:
    """(YYYY-MM, numerator/denominator) per month that has a denominator."""
    _, rule = INDICATORS[rule_code]
    by_month: dict[str, list[EpisodeFacts]] = {}
    for f in facts:
        by_month.setdefault(f.day.strftime("%Y-%m"), []).append(f)
    out = []
    for month in sorted(by_month):
        num, den = counts(rule, by_month[month])
        if den:
            out.append((month, num / den))
    return out


def plot_indicator(rule_code: str, facts: Iterable[EpisodeFacts], path: Path) -> None:
    """Write a PNG or SVG (by suffix) of the indicator's monthly score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = monthly_scores(rule_code, facts)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([m for m, _ in points], [s for _, s in points], marker="o")
    ax.set_ylim(0, 1.05)
    ax.set_title(INDICATORS[rule_code][0])
    ax.set_ylabel("numerator / denominator")
    fig.autofmt_xdate()
    fig.savefig(path, format=path.suffix.lstrip(".").lower())
    plt.close(fig)


def plot_indicators(codes: Iterable[str], facts: Iterable[EpisodeFacts], path: Path) -> None:
    """Write a PNG or SVG (by suffix) of several indicators' monthly scores, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    facts = list(facts)
    fig, ax = plt.subplots(figsize=(9, 4))
    for code in codes:
        points = monthly_scores(code, facts)
        if points:
            # Dates, not month labels: lines with different months share one time axis.
            months = [datetime.strptime(m, "%Y-%m") for m, _ in points]
            # matplotlib's date units take datetimes; its stubs list only arrays and numbers.
            ax.plot(months, [s for _, s in points], marker="o", label=code)  # type: ignore[arg-type]
    ax.set_title("Quality indicators by month")
    ax.set_ylabel("numerator / denominator")
    ax.set_ylim(-0.05, 1.05)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, format=path.suffix.lstrip(".").lower())
    plt.close(fig)
