"""The benchmark's table (bench/run.py): the goal column of the engine comparison, and the
committed results (bench/RESULTS.md, bench/results.json, the README's Benchmarks table)
agreeing with each other, so a figure in the README is one `python -m bench run` measured."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bench import run

REPO = Path(__file__).resolve().parents[3]


def _result(**figures: Any) -> dict[str, Any]:
    return {"server_cpu_pct": 100, "generator_cpu_pct": 50, "other_cpu_pct": 1, **figures}


def _report(ours_rate: float, ours_p50: float) -> dict[str, Any]:
    def fetch(rate: float, p50: float) -> dict[str, Any]:
        return _result(
            sessions_per_s=rate,
            latency={"fetch_body": {"p50_ms": p50, "p99_ms": 10.0}},
            server_cpu_ms_per_op=4.0,
        )

    return {
        "machine": {
            "cpu": "CPU",
            "cores": 2,
            "memory_gb": 1,
            "os": "OS",
            "kernel": "k",
            "python": "3.11",
            "dovecot": "2.3",
            "fd_limit": 1024,
        },
        "date": "2026-12-07 00:00 UTC",
        "plan": {"rounds": 1, "duration": 4},
        "password_scheme": "argon2id",
        "results": {
            "ours": {"fetch 4k": [fetch(ours_rate, ours_p50)]},
            "dovecot-plain": {"fetch 4k": [fetch(100.0, 2.0)]},
            "dovecot": {"fetch 4k": [fetch(10.0, 2.0)]},
        },
    }


def _rows(text: str, title_start: str) -> list[list[str]]:
    """The cells of the table that follows the bold title starting with `title_start`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"**{title_start}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[2:]  # past the header and its rule


@pytest.mark.parametrize(
    ("rate", "p50", "met_rate", "met_p50"),
    [(100.0, 3.0, "yes", "yes"), (99.0, 3.1, "no", "no")],
)
def test_the_engine_table_says_whether_each_goal_is_met(
    rate: float, p50: float, met_rate: str, met_p50: str
) -> None:
    text = run.table(_report(rate, p50))
    engine = {r[1]: r for r in _rows(text, "Engine")}
    assert engine["sessions/s"][4:8] == [f"{rate / 100:.2f}", "higher", ">= 1", met_rate]
    assert engine["body FETCH p50/p99 ms"][6:8] == ["p50 <= 1.5", met_p50]
    assert engine["server CPU ms/session"][6:8] == ["", ""]  # no goal on that row
    same_hash = {r[1]: r for r in _rows(text, "Same argon2id")}
    assert len(same_hash["sessions/s"]) == 6  # no goal column: not what the goals are about
    assert same_hash["sessions/s"][4] == f"{rate / 10:.2f}"


# --- the committed results -------------------------------------------------------------------

COMMITTED = REPO / "bench" / "results.json"


def _committed() -> dict[str, Any]:
    return json.loads(COMMITTED.read_text())


def test_the_committed_table_is_the_one_its_figures_make(tmp_path: Path) -> None:
    written = tmp_path / "RESULTS.md"
    run.write_results(_committed(), written)
    assert (REPO / "bench" / "RESULTS.md").read_text() == written.read_text()
    assert json.loads(written.with_name("results.json").read_text()) == _committed()


# README row (scenario group, figure) -> the bench's scenarios and figure label
README_ROWS = {
    ("fetch", "sessions/s (4 KB / real-world)"): (("fetch 4k", "fetch cpython"), "sessions/s"),
    ("fetch", "server CPU per session"): (("fetch 4k", "fetch cpython"), "server CPU ms/session"),
    ("fetch", "body FETCH p50"): (("fetch 4k", "fetch cpython"), "body FETCH p50/p99 ms"),
    ("pop3", "sessions/s (4 KB / real-world)"): (("pop3 4k", "pop3 cpython"), "sessions/s"),
    ("pop3", "server CPU per session"): (("pop3 4k", "pop3 cpython"), "server CPU ms/session"),
    ("connect", "logins/s"): (("connect",), "logins/s"),
    ("connect", "server CPU per login"): (("connect",), "server CPU ms/login"),
    ("append", "appends/s"): (("append",), "appends/s"),
    ("append", "server CPU per append"): (("append",), "server CPU ms/append"),
}


def _engine(scenario: str, label: str) -> tuple[str, str, str]:
    """(ratio, goal, met) of one row of the engine comparison, from the committed figures."""
    results = _committed()["results"]
    found = next(s for s in run.SCENARIOS if s.name == scenario)
    figure = next(f for f in run.FIGURES[found.load] if f.label == label)
    ours, theirs = (
        run.median([run.value(r, figure) for r in results[side].get(scenario, [])])
        for side in ("ours", "dovecot-plain")
    )
    if isinstance(ours, tuple):
        ours, theirs = ours[0], theirs[0]  # the p50
    goal, met = run.goal(found, figure, ours, theirs)
    return f"{ours / theirs:.2f}", goal, met


def _readme_goal(goal: str) -> str:
    """bench's ">= 1" or "p50 <= 1.5" as the README writes it: ">= 1.0", "<= 1.5"."""
    if not goal:
        return ""
    op, bound = goal.removeprefix("p50 ").split()
    return f"{op} {float(bound):.1f}"


def test_the_readme_shows_the_committed_engine_comparison() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Benchmarks") :]
    assert f"Measured {_committed()['date']}" in " ".join(section.split())
    group = ""
    checked = set()
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith(("| scenario", "|---")):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        group = re.split(r"[: ]", cells[0])[0] if cells[0] else group
        wanted = README_ROWS.get((group, cells[1]))
        if wanted is None:
            continue
        scenarios, label = wanted
        rows = [_engine(s, label) for s in scenarios]
        assert cells[2] == " / ".join(r[0] for r in rows), (group, cells[1])
        goals = {_readme_goal(r[1]) for r in rows}
        assert [cells[3]] == list(goals), cells[1]
        verdicts = {r[2] for r in rows} - {""}
        if verdicts:
            assert cells[4] == ("partly" if len(verdicts) > 1 else verdicts.pop()), cells[1]
        checked.add((group, cells[1]))
    assert checked == set(README_ROWS)
