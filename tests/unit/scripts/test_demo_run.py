"""scripts/demo_run.py's own logic (the rest drives a container): a strategy's counts from
loadlib.run_load_across become the segment scripts/demo_picture.py draws and counts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

import demo_picture  # noqa: E402
import demo_run  # noqa: E402


def counts() -> dict:
    jobs = {
        "r-0": {"sent": 100.0, "starts": [100.1], "finishes": [100.2], "attempts": []},
        "r-1": {"sent": 101.0, "starts": [101.1], "finishes": [], "attempts": []},
        "r-long": {"sent": 99.0, "starts": [99.1, 112.0], "finishes": [120.0], "attempts": []},
    }
    return {"jobs": jobs, "long_task": jobs["r-long"], "baseline_began": 99.5, "action_began": 105.0,
            "action_seconds": 5.5, "lost": 1, "run_twice": 1, "outcome": None}


def test_segment_carries_the_ledger_timings_and_report_of_the_strategy():
    report = {"hosts": {"h": {"phases": {"drain": [105.2, 108.0]}}}}
    seg = demo_run.segment("drain", counts(), report)
    assert seg["strategy"] == "drain deploy" and seg["report"] is report
    assert seg["baseline"] == [99.5, 105.0] and seg["action"] == [105.0, 110.5]
    assert "jobs" not in seg["counts"] and "long_task" not in seg["counts"]


def test_segment_rows_match_the_harness_counts():
    row = demo_picture.summary(demo_run.segment("naive-no-acks", counts(), None))
    assert (row["strategy"], row["sent"], row["completed"], row["lost"], row["run_twice"]) == \
        ("naive restart, no acks_late", 3, 2, 1, 1)
    assert row["deploy_seconds"] == 5.5
    # Starts in [105, 110.5]: none, so the whole action; the baseline's longest: 101.1 -> 105.
    assert row["deploy_pause"] == 5.5 and row["baseline_pause"] == 3.9


def test_unknown_strategy_is_refused(capsys):
    assert demo_run.main(["taskstack-demo-debian12", "/tmp/x.json", "rolling"]) == 2
    assert "unknown strategy" in capsys.readouterr().err


def test_harness_records_each_run_for_the_picture_only_when_asked(tmp_path, monkeypatch):
    """loadlib.record (benchmarks/deploy_compare.sh sets TASKSTACK_LOAD_RECORD): one JSON line
    per run, drawable as it is; nothing written without the variable."""
    path = tmp_path / "segments.jsonl"
    monkeypatch.delenv(demo_run.loadlib.RECORD_ENV, raising=False)
    demo_run.loadlib.record("naive_restart", counts(), None)
    assert not path.exists()
    monkeypatch.setenv(demo_run.loadlib.RECORD_ENV, str(path))
    report = {"hosts": {"h": {"phases": {"drain": [105.2, 108.0]}}}}
    demo_run.loadlib.record("naive_restart", counts(), None)
    demo_run.loadlib.record("drain_deploy", counts(), report)
    segments = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(s["strategy"], s["report"]) for s in segments] == [("naive_restart", None), ("drain_deploy", report)]
    svg = demo_picture.render({"segments": segments})
    assert 'data-phase="drain"' in svg and 'data-phase="restart"' in svg
