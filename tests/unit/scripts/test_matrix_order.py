"""scripts/matrix_order.py: the simulation of run_scenarios and the order it picks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parents[3] / "scripts" / "matrix_order.py"
spec = importlib.util.spec_from_file_location("matrix_order", SCRIPT)
assert spec and spec.loader
matrix_order = importlib.util.module_from_spec(spec)
spec.loader.exec_module(matrix_order)

LOG = """\
molecule deploy (debian12)                        752  ok
molecule faults (debian12)                        945  ok
molecule redis (debian12)                         557  ok
molecule fleet (debian12)                         694  ok
molecule redis (debian13)                         526  ok
molecule fleet (debian13)                         447  ok
molecule smoke (debian12)                          38  ok
molecule smoke (debian13)                          37  ok
molecule stack (debian12)                         501  ok
molecule stack (debian13)                         458  ok
molecule broken (debian12)                         12  FAILED (exit 1)
wall clock                                       2959  (scenarios run side by side)
"""
# The matrix of that run, and what its log showed: the scenarios ended 2794 s after they began.
MATRIX = "# comment\ndeploy debian12\nfaults debian12\nredis debian12 debian13\nfleet debian12 debian13\n" \
         "stack debian12 debian13\nsmoke debian12 debian13\n"


def test_reads_the_passed_scenario_rows_only():
    times = matrix_order.read_times(LOG)
    assert len(times) == 10
    assert times[("faults", "debian12")] == 945
    assert ("broken", "debian12") not in times


def test_reads_a_matrix_line_per_distro_in_order():
    assert matrix_order.read_matrix(MATRIX)[:4] == [("deploy", "debian12"), ("faults", "debian12"),
                                                    ("redis", "debian12"), ("redis", "debian13")]


def test_simulation_gives_the_wall_time_that_run_saw():
    times = matrix_order.read_times(LOG)
    assert matrix_order.wall_time(matrix_order.read_matrix(MATRIX), times, 2) == 2794


def test_never_runs_one_scenario_twice_at_once():
    times = {("a", "12"): 100.0, ("a", "13"): 100.0}
    assert matrix_order.wall_time([("a", "12"), ("a", "13")], times, 2) == 200


def test_best_order_is_no_worse_and_keeps_every_run():
    times = matrix_order.read_times(LOG)
    order = matrix_order.best_order(times, trials=20)
    assert sorted(order) == sorted(times)
    assert matrix_order.wall_time(order, times, 2) < 2794 - 200
