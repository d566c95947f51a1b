"""scripts/demo_picture.py on a recorded demo run (tests/unit/scripts/recorded_demo_run.json: the
ledger and deploy reports of a real `make demo`, cut to the stretch around each action): the
picture is one well-formed SVG with both series, a band per deploy phase named as the report
names it, and a marker per lost and per repeated task, the data embedded."""

from __future__ import annotations

import copy
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

import demo_picture  # noqa: E402

RECORDED = Path(__file__).with_name("recorded_demo_run.json")
NS = {"svg": demo_picture.SVG_NS}


@pytest.fixture(name="run")
def run_fixture() -> dict:
    return json.loads(RECORDED.read_text())


def draw(run: dict) -> ET.Element:
    return ET.fromstring(demo_picture.render(run))


def report_phases(run: dict) -> set[tuple[str, str]]:
    return {(seg["strategy"], phase) for seg in run["segments"] if seg.get("report")
            for result in seg["report"]["hosts"].values() for phase, span in result["phases"].items()
            if span[0] is not None and span[1] is not None}


def test_recorded_run_has_what_the_checks_need(run):
    """The fixture itself: a real deploy report with phases, a lost task and a repeated one."""
    assert report_phases(run)
    jobs = [j for seg in run["segments"] for j in seg["jobs"].values()]
    assert any(demo_picture.is_lost(j) for j in jobs)
    assert any(demo_picture.ran_twice(j) for j in jobs)


def test_picture_is_svg_with_started_and_completed_series(run):
    svg = draw(run)
    assert svg.tag == f"{{{demo_picture.SVG_NS}}}svg"
    series = {p.get("data-series"): p for p in svg.iterfind(".//svg:polyline", NS)}
    assert set(series) == {"started", "completed"}
    for line in series.values():
        points = line.get("points").split()
        assert len(points) > 20
        assert any(float(p.split(",")[1]) < demo_picture.PLOT_TOP + demo_picture.PLOT_HEIGHT for p in points), \
            "a series that never leaves zero"


def test_series_count_every_start_and_finish_of_the_run(run):
    data = json.loads(draw(run).find(".//svg:metadata", NS).text)
    jobs = [j for seg in run["segments"] for j in seg["jobs"].values()]
    assert sum(data["started_per_second"]) == sum(len(demo_picture.task_starts(j)) for j in jobs)
    assert sum(data["completed_per_second"]) == sum(len(j["finishes"]) for j in jobs)


def test_every_phase_of_every_report_is_a_labelled_band(run):
    svg = draw(run)
    bands = {(r.get("data-segment"), r.get("data-phase")) for r in svg.iterfind(".//svg:rect[@class='phase']", NS)}
    assert report_phases(run) <= bands
    labels = {t.text for t in svg.iterfind(".//svg:text[@class='phase-label']", NS)}
    assert {phase for _seg, phase in report_phases(run)} <= labels


def test_band_spans_the_phase_as_the_report_times_it(run):
    seg = next(s for s in run["segments"] if s.get("report"))
    host, result = next(iter(seg["report"]["hosts"].items()))
    phase, (start, end) = next((p, s) for p, s in result["phases"].items() if s[0] is not None)
    rect = next(r for r in draw(run).iterfind(".//svg:rect[@class='phase']", NS)
                if r.get("data-phase") == phase and r.get("data-segment") == seg["strategy"])
    assert float(rect.get("data-start")) == pytest.approx(start, abs=1e-3)
    assert float(rect.get("data-end")) == pytest.approx(end, abs=1e-3)


def test_a_restart_without_a_report_is_one_band_over_the_action(run):
    naive = next(s for s in run["segments"] if not s.get("report"))
    rects = [r for r in draw(run).iterfind(".//svg:rect[@class='phase']", NS)
             if r.get("data-segment") == naive["strategy"]]
    assert [(r.get("data-phase"), float(r.get("data-start"))) for r in rects] == \
        [("restart", pytest.approx(naive["action"][0], abs=1e-3))]


def test_each_lost_and_each_repeated_task_is_marked(run):
    svg = draw(run)
    lost = {k for seg in run["segments"] for k, j in seg["jobs"].items() if not j["finishes"]}
    twice = {k for seg in run["segments"] for k, j in seg["jobs"].items()
             if len(j["starts"]) > 1 or len({a[0] for a in j["attempts"]}) != len(j["attempts"])}
    assert {m.get("data-job") for m in svg.iterfind(".//svg:path[@class='lost']", NS)} == lost
    assert {m.get("data-job") for m in svg.iterfind(".//svg:circle[@class='twice']", NS)} == twice


def test_a_run_that_lost_nothing_has_no_markers(run):
    clean = copy.deepcopy(run)
    for seg in clean["segments"]:
        for job in seg["jobs"].values():
            job["starts"], job["finishes"], job["attempts"] = job["starts"][:1] or [job["sent"]], [job["sent"] + 1], []
    svg = draw(clean)
    assert not list(svg.iterfind(".//svg:path[@class='lost']", NS))
    assert not list(svg.iterfind(".//svg:circle[@class='twice']", NS))


def test_table_counts_each_strategy_from_its_own_ledger(run):
    rows = [demo_picture.summary(seg) for seg in run["segments"]]
    for seg, row in zip(run["segments"], rows):
        jobs = seg["jobs"].values()
        assert row["sent"] == len(jobs) == row["completed"] + row["lost"]
        assert row["deploy_seconds"] == pytest.approx(seg["action"][1] - seg["action"][0], abs=0.1)
        assert row["deploy_pause"] is not None and row["baseline_pause"] is not None
    text = demo_picture.table(run)
    assert all(seg["strategy"] in text for seg in run["segments"])


def test_longest_pause_counts_the_window_edges():
    assert demo_picture.longest_pause([], 10.0, 14.0) == 4.0
    assert demo_picture.longest_pause([11.0, 11.5, 20.0], 10.0, 14.0) == 2.5


def test_main_writes_the_svg_beside_the_run(tmp_path, run, capsys):
    source = tmp_path / "run.json"
    source.write_text(json.dumps(run))
    assert demo_picture.main([str(source), "--table"]) == 0
    ET.parse(tmp_path / "run.svg")
    assert str(tmp_path / "run.svg") in capsys.readouterr().out


def test_a_run_without_tasks_is_refused():
    with pytest.raises(ValueError, match="no tasks"):
        demo_picture.render({"segments": [{"strategy": "drain", "jobs": {}}]})


def test_verify_accepts_the_picture_of_the_run_and_refuses_another_runs(run):
    svg = demo_picture.render(run)
    assert demo_picture.verify(svg, run) == []
    other = copy.deepcopy(run)
    seg = other["segments"][0]
    job = next(iter(seg["jobs"]))
    seg["jobs"][job]["finishes"] = []
    problems = demo_picture.verify(svg, other)
    assert any(p.startswith("rows:") for p in problems) and any(p.startswith("lost:") for p in problems)
    assert demo_picture.verify('<svg xmlns="http://www.w3.org/2000/svg"/>', run) == ["the picture carries no data"]
