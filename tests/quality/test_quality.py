"""Quality indicators: MeasureReport counts against independently computed expectations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from fhir.resources.R4B.measurereport import MeasureReport
from hypothesis import given
from hypothesis import strategies as st

from exchange.quality.indicators import EpisodeFacts, measure_report
from exchange.quality.plot import monthly_scores, plot_indicator

NOW = datetime(2026, 11, 1, tzinfo=UTC)

# Hand-built: 6 episodes in 2026, one in 2025 (outside the period).
EPISODES = [
    EpisodeFacts("e1", date(2026, 1, 5), True, True, True, True, 10, 3, 3, 8, 3, 6.5, 95),
    EpisodeFacts("e2", date(2026, 2, 7), True, False, True, False, 72, 2, 1, 6, 4, None, 88),
    EpisodeFacts("e3", date(2026, 3, 9), False, None, False, None, None, 0, 0, None, None, 7.2),
    EpisodeFacts("e4", date(2026, 3, 19), True, True, True, True, 48, 2, 2, 10, 5, 6.9, 90),
    EpisodeFacts("e5", date(2026, 5, 1), None, None, True, True, None, None, None, 7, 0),
    EpisodeFacts("e6", date(2026, 12, 31), True, True, None, None, 5, 1, 0, None, None, None, 91),
    EpisodeFacts("old", date(2025, 12, 31), True, False, True, False, 99, 1, 0, 9, 9, 9.0, 10),
]

# Expected counts, worked by hand from the table above (numerator, denominator).
EXPECTED = {
    "language-service": (3, 4),  # e1 e2 e4 e6 need it; e2 did not get it
    "direct-payment": (3, 4),  # insured: e1 e2 e4 e5; e2 paid after discharge
    "complaint-response": (3, 4),  # e1 10h, e2 72h, e4 48h, e6 5h
    "rwd-followup": (2, 4),  # planned: e1 3/3, e2 1/2, e4 2/2, e6 0/1
    "pain-vas-50": (3, 4),  # e1 8->3, e2 6->4, e4 10->5, e5 7->0
    "hba1c-7": (2, 3),  # e1 6.5, e3 7.2, e4 6.9
    "satisfaction-90": (3, 4),  # e1 95, e2 88, e4 90, e6 91
}


def _counts(report: dict) -> dict[str, tuple[int, int]]:
    out = {}
    for g in report["group"]:
        pops = {p["code"]["coding"][0]["code"]: p["count"] for p in g["population"]}
        out[g["id"]] = (pops["numerator"], pops["denominator"])
    return out


def test_hand_built_counts_and_r4b_parse() -> None:
    report = measure_report("boao-hosp-1", date(2026, 1, 1), date(2026, 12, 31), EPISODES, now=NOW)
    assert _counts(report) == EXPECTED
    parsed = MeasureReport.model_validate(report)
    assert parsed.subject is None and parsed.reporter.reference == "Organization/boao-hosp-1"
    assert len(parsed.group) == len(EXPECTED)


facts = st.builds(
    EpisodeFacts,
    episode=st.just("x"),
    day=st.dates(min_value=date(2026, 1, 1), max_value=date(2026, 12, 31)),
    hba1c_after=st.one_of(st.none(), st.floats(3, 15)),
    satisfaction=st.one_of(st.none(), st.floats(0, 100)),
)


@given(st.lists(facts, max_size=30))
def test_counts_match_a_direct_count(episodes: list[EpisodeFacts]) -> None:
    got = _counts(measure_report("o", date(2026, 1, 1), date(2026, 12, 31), episodes, now=NOW))
    hb = [e.hba1c_after for e in episodes if e.hba1c_after is not None]
    sat = [e.satisfaction for e in episodes if e.satisfaction is not None]
    assert got["hba1c-7"] == (len([v for v in hb if v < 7.0]), len(hb))
    assert got["satisfaction-90"] == (len([v for v in sat if v >= 90]), len(sat))
    assert all(n <= d for n, d in got.values())


def test_plot_files_are_real_png_and_svg(tmp_path: Path) -> None:
    assert monthly_scores("satisfaction-90", EPISODES)[0] == ("2025-12", 0.0)
    png, svg = tmp_path / "q.png", tmp_path / "q.svg"
    plot_indicator("satisfaction-90", EPISODES, png)
    plot_indicator("satisfaction-90", EPISODES, svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in svg.read_bytes()[:2000]
