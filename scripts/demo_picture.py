"""Draw a demo run as one self-contained SVG: tasks started and completed per second, each
deploy's phases shaded and labelled as its deploy report gives them, lost and repeated tasks
marked, the run's own data embedded.

    python scripts/demo_picture.py RUN.json [-o PICTURE.svg]   (default: RUN.svg beside RUN.json)

RUN.json is what scripts/demo_run.py writes after a run (or any file of this shape):

    {"title": "...",
     "segments": [{"strategy": "drain",            # a row of the table, a band of the picture
                   "jobs": {job: {"sent", "starts", "finishes", "attempts", ...}},  # the ledger
                   "report": {...} or null,         # the deploy report (taskstack.celery.deploy)
                   "baseline": [from, to],          # the no-deploy stretch of the same load
                   "action": [from, to],            # the deploy (or restart) as the caller timed it
                   "counts": {...}}]}               # optional: the harness's counts

A task is lost when it never finished; run twice when it started more than once or one of its
retried attempts ran twice (the rule of tests/demo_app/demo/report.py). Times are epoch seconds.
Standard library only: the picture is drawn where Ansible runs, with no plotting package.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The load harness's own ledger logic (stdlib only), so the picture counts as the tests count.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "molecule" / "shared" / "tests"))

from loadlib import ran_twice, task_starts  # noqa: E402  (molecule/shared/tests, put on the path above)
from stacklib import longest_pause  # noqa: E402

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 1400
PLOT_TOP = 90
PLOT_HEIGHT = 300
LEFT = 60
RIGHT = 20
MARKER_ROW = PLOT_TOP + PLOT_HEIGHT + 50
HEIGHT = MARKER_ROW + 110
STARTED_COLOUR = "#1f77b4"
COMPLETED_COLOUR = "#2ca02c"
LOST_COLOUR = "#d62728"
TWICE_COLOUR = "#ff7f0e"
# One shade per phase name; a phase this list does not know gets grey.
PHASE_COLOURS = {
    "drain": "#fdd0a2", "update": "#c6dbef", "stop": "#fcbba1", "start": "#c7e9c0",
    "sync": "#dadaeb", "restart": "#fcbba1",
}
BASELINE_COLOUR = "#f0f0f0"

Job = dict[str, Any]


@dataclass(frozen=True)
class Band:
    """A shaded stretch of the time axis: a deploy phase, a naive restart or a baseline."""

    segment: str
    phase: str
    start: float
    end: float
    host: str = ""


def is_lost(job: Job) -> bool:
    return not job.get("finishes")


def per_second(times: list[float], t0: float, seconds: int) -> list[int]:
    """How many of `times` fall in each second [t0 + i, t0 + i + 1) for i in range(seconds)."""
    counts = [0] * seconds
    for t in times:
        i = math.floor(t - t0)
        if 0 <= i < seconds:
            counts[i] += 1
    return counts


def _span(pair: list[float]) -> tuple[float, float]:
    return float(pair[0]), float(pair[1])


def bands(segment: dict[str, Any]) -> list[Band]:
    """The segment's shaded stretches: its baseline, then each deploy phase per host from the
    report's `phases` (begin and end per phase); a segment without a report (a naive restart)
    or a report without phases gets one band over the action, named after the strategy."""
    name = segment["strategy"]
    out = []
    if segment.get("baseline"):
        begin, end = _span(segment["baseline"])
        out.append(Band(name, "no deploy", begin, end))
    report = segment.get("report") or {}
    phased = [
        Band(name, phase, float(span[0]), float(span[1]), host)
        for host, result in sorted((report.get("hosts") or {}).items())
        for phase, span in (result.get("phases") or {}).items()
        if span and span[0] is not None and span[1] is not None
    ]
    if phased:
        out.extend(sorted(phased, key=lambda b: b.start))
    elif segment.get("action"):
        begin, end = _span(segment["action"])
        out.append(Band(name, "restart" if not report else name, begin, end))
    return out


def summary(segment: dict[str, Any]) -> dict[str, Any]:
    """One row of the demo's table, from the segment's own ledger and timings."""
    jobs = segment["jobs"].values()
    starts = [s for j in jobs for s in task_starts(j)]
    row: dict[str, Any] = {
        "strategy": segment["strategy"],
        "sent": len(jobs),
        "completed": sum(1 for j in jobs if not is_lost(j)),
        "lost": sum(1 for j in jobs if is_lost(j)),
        "run_twice": sum(1 for j in jobs if ran_twice(j)),
        "baseline_pause": None, "deploy_pause": None, "deploy_seconds": None,
    }
    if segment.get("baseline"):
        row["baseline_pause"] = round(longest_pause(starts, *map(float, segment["baseline"])), 2)
    if segment.get("action"):
        a, b = map(float, segment["action"])
        row["deploy_pause"] = round(longest_pause(starts, a, b), 2)
        row["deploy_seconds"] = round(b - a, 1)
    return row


def table(doc: dict[str, Any]) -> str:
    """The demo's table: one line per segment. The pauses are the longest times without a task
    start during the deploy and during the same load's no-deploy stretch before it."""
    lines = [f"{'strategy':<30}{'sent':>6}{'completed':>11}{'lost':>6}{'run twice':>11}"
             f"{'longest pause':>15}{'(no deploy)':>13}{'deploy time':>13}"]
    for segment in doc["segments"]:
        r = summary(segment)
        pause, base, secs = ("-" if r[k] is None else f"{r[k]:.1f} s"
                             for k in ("deploy_pause", "baseline_pause", "deploy_seconds"))
        lines.append(f"{r['strategy']:<30}{r['sent']:>6}{r['completed']:>11}{r['lost']:>6}{r['run_twice']:>11}"
                     f"{pause:>15}{'(' + base + ')':>13}{secs:>13}")
    return "\n".join(lines)


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _nice_step(span: float, target: int) -> float:
    """A round tick step (1, 2, 5 times a power of ten) giving about `target` ticks over `span`."""
    raw = max(span / max(target, 1), 1e-9)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def render(doc: dict[str, Any]) -> str:
    """The SVG document (a string) of a run."""
    segments = doc["segments"]
    jobs = [j for s in segments for j in s["jobs"].values()]
    if not jobs:
        raise ValueError("the run has no tasks: nothing to draw")
    all_bands = [b for s in segments for b in bands(s)]
    times = [float(j["sent"]) for j in jobs] + [t for j in jobs for t in task_starts(j)] \
        + [float(t) for j in jobs for t in j.get("finishes", [])] + [t for b in all_bands for t in (b.start, b.end)]
    t0 = math.floor(min(times))
    seconds = max(1, math.ceil(max(times) - t0) + 1)
    started = per_second([t for j in jobs for t in task_starts(j)], t0, seconds)
    completed = per_second([float(t) for j in jobs for t in j.get("finishes", [])], t0, seconds)
    y_max = max(4, *started, *completed)
    scale_x = (WIDTH - LEFT - RIGHT) / seconds

    def x(t: float) -> float:
        return round(LEFT + (t - t0) * scale_x, 2)

    def y(v: float) -> float:
        return round(PLOT_TOP + PLOT_HEIGHT - v * PLOT_HEIGHT / y_max, 2)

    ET.register_namespace("", SVG_NS)
    svg = ET.Element("svg", {"xmlns": SVG_NS, "width": str(WIDTH), "height": str(HEIGHT),
                             "viewBox": f"0 0 {WIDTH} {HEIGHT}", "font-family": "sans-serif", "font-size": "12"})
    _el(svg, "title", doc.get("title", "taskstack.celery demo run"))
    _el(svg, "rect", x=0, y=0, width=WIDTH, height=HEIGHT, fill="white")
    _el(svg, "text", doc.get("title", "taskstack.celery demo run"), x=LEFT, y=20, font_size=16, font_weight="bold")

    # Bands first, under the series; each labelled with its phase name, the segment's name above.
    band_group = _el(svg, "g", id="phases")
    for band in all_bands:
        colour = BASELINE_COLOUR if band.phase == "no deploy" else PHASE_COLOURS.get(band.phase, "#d9d9d9")
        cls = "baseline" if band.phase == "no deploy" else "phase"
        rect = _el(band_group, "rect", class_=cls, x=x(band.start), y=PLOT_TOP, width=max(0.5, x(band.end) - x(band.start)),
                   height=PLOT_HEIGHT, fill=colour, fill_opacity=0.8, data_phase=band.phase,
                   data_segment=band.segment, data_start=f"{band.start:.3f}", data_end=f"{band.end:.3f}")
        _el(rect, "title", f"{band.segment}: {band.phase} {band.end - band.start:.1f} s"
            + (f" on {band.host}" if band.host else ""))
        middle = round((x(band.start) + x(band.end)) / 2, 2)
        # A narrow band's label runs down it.
        turn = {"transform": f"rotate(90 {middle} {PLOT_TOP + 6})", "text_anchor": "start"} \
            if x(band.end) - x(band.start) < 7 * len(band.phase) else {"text_anchor": "middle"}
        _el(band_group, "text", band.phase, class_="phase-label", data_phase=band.phase, x=middle,
            y=PLOT_TOP + 6 if "transform" in turn else PLOT_TOP + 14, font_size=10, **turn)
    # The whole action as the caller timed it (a deploy's playbook runs before its first phase
    # and after its last): a dashed frame over the phases.
    for segment in segments:
        if segment.get("action"):
            a, b = map(float, segment["action"])
            frame = _el(band_group, "rect", class_="action", data_segment=segment["strategy"], x=x(a), y=PLOT_TOP,
                        width=max(0.5, x(b) - x(a)), height=PLOT_HEIGHT, fill="none", stroke="#777",
                        stroke_dasharray="4 3")
            _el(frame, "title", f"{segment['strategy']}: {b - a:.1f} s from the command to its end")
    for segment in segments:
        spans = [t for b in bands(segment) for t in (b.start, b.end)]
        if spans:
            r = summary(segment)
            label = _el(svg, "text", class_="segment-label", x=x(min(spans)), y=PLOT_TOP - 22, font_size=11)
            _el(label, "tspan", segment["strategy"], font_weight="bold")
            _el(label, "tspan", f"lost {r['lost']}, run twice {r['run_twice']}", x=x(min(spans)), dy=14,
                fill=LOST_COLOUR if r["lost"] else TWICE_COLOUR if r["run_twice"] else "#333")

    # Axes and ticks.
    axes = _el(svg, "g", id="axes", stroke="#444")
    _el(axes, "line", x1=LEFT, y1=PLOT_TOP + PLOT_HEIGHT, x2=WIDTH - RIGHT, y2=PLOT_TOP + PLOT_HEIGHT)
    _el(axes, "line", x1=LEFT, y1=PLOT_TOP, x2=LEFT, y2=PLOT_TOP + PLOT_HEIGHT)
    step = _nice_step(seconds, 12)
    tick = 0.0
    while tick <= seconds:
        _el(axes, "line", x1=x(t0 + tick), y1=PLOT_TOP + PLOT_HEIGHT, x2=x(t0 + tick), y2=PLOT_TOP + PLOT_HEIGHT + 4)
        _el(svg, "text", f"{tick:g}", x=x(t0 + tick), y=PLOT_TOP + PLOT_HEIGHT + 16, text_anchor="middle", font_size=10)
        tick += step
    y_step = _nice_step(y_max, 5)
    v = 0.0
    while v <= y_max:
        _el(axes, "line", x1=LEFT - 4, y1=y(v), x2=LEFT, y2=y(v))
        _el(svg, "text", f"{v:g}", x=LEFT - 6, y=y(v) + 4, text_anchor="end", font_size=10)
        v += y_step
    _el(svg, "text", "seconds since the first task was sent", x=(LEFT + WIDTH - RIGHT) / 2,
        y=PLOT_TOP + PLOT_HEIGHT + 28, text_anchor="middle", font_size=11)
    _el(svg, "text", "tasks per second", x=14, y=PLOT_TOP + PLOT_HEIGHT / 2, text_anchor="middle",
        transform=f"rotate(-90 14 {PLOT_TOP + PLOT_HEIGHT / 2})", font_size=11)

    # The two series, as steps: one value per second.
    for name, colour, values in (("started", STARTED_COLOUR, started), ("completed", COMPLETED_COLOUR, completed)):
        points = []
        for i, value in enumerate(values):
            points += [f"{x(t0 + i)},{y(value)}", f"{x(t0 + i + 1)},{y(value)}"]
        line = _el(svg, "polyline", id=f"series-{name}", class_="series", data_series=name, points=" ".join(points),
                   fill="none", stroke=colour, stroke_width=1.5, stroke_opacity=0.9)
        _el(line, "title", f"tasks {name} per second")

    # Lost tasks at the time they were sent, repeated ones at their second start.
    marks = _el(svg, "g", id="markers")
    _el(svg, "text", "lost", x=LEFT - 6, y=MARKER_ROW + 4, text_anchor="end", font_size=10, fill=LOST_COLOUR)
    _el(svg, "text", "run twice", x=LEFT - 6, y=MARKER_ROW + 22, text_anchor="end", font_size=10, fill=TWICE_COLOUR)
    for segment in segments:
        for job_id, job in sorted(segment["jobs"].items()):
            if is_lost(job):
                at = x(float(job["sent"]))
                m = _el(marks, "path", class_="lost", data_job=job_id, d=f"M{at - 4},{MARKER_ROW - 4} l8,8 m0,-8 l-8,8",
                        stroke=LOST_COLOUR, stroke_width=2)
                _el(m, "title", f"lost: {job_id} ({segment['strategy']}), sent at +{float(job['sent']) - t0:.1f} s,"
                    f" started {len(job.get('starts', []))}x, never finished")
            if ran_twice(job):
                again = sorted(task_starts(job))[1] if len(task_starts(job)) > 1 else float(job["sent"])
                m = _el(marks, "circle", class_="twice", data_job=job_id, cx=x(again), cy=MARKER_ROW + 18, r=4,
                        fill=TWICE_COLOUR)
                _el(m, "title", f"run twice: {job_id} ({segment['strategy']}), started again at +{again - t0:.1f} s")

    # Legend.
    legend = _el(svg, "g", id="legend", font_size=11)
    lx = LEFT
    ly = HEIGHT - 40
    for series, colour in (("tasks started / s", STARTED_COLOUR), ("tasks completed / s", COMPLETED_COLOUR)):
        _el(legend, "line", x1=lx, y1=ly, x2=lx + 20, y2=ly, stroke=colour, stroke_width=2)
        _el(legend, "text", series, x=lx + 25, y=ly + 4)
        lx += 150
    for phase in ["no deploy", *dict.fromkeys(b.phase for b in all_bands if b.phase != "no deploy")]:
        _el(legend, "rect", x=lx, y=ly - 6, width=14, height=12,
            fill=BASELINE_COLOUR if phase == "no deploy" else PHASE_COLOURS.get(phase, "#d9d9d9"), stroke="#999")
        _el(legend, "text", phase, x=lx + 18, y=ly + 4)
        lx += 30 + 7 * len(phase)
    _el(svg, "text", "Shaded: each deploy's phases from its report (drain: stop consuming and wait for running tasks;"
        " update: new code; stop/start: the workers; sync: blue-green's paths after the switch); dashed: the whole"
        " command.",
        x=LEFT, y=HEIGHT - 16, font_size=10, fill="#555")

    # The data itself, so the picture can be checked or redrawn without the run.
    data = {"t0": t0, "started_per_second": started, "completed_per_second": completed,
            "bands": [b.__dict__ for b in all_bands], "rows": [summary(s) for s in segments],
            "lost": sorted(k for s in segments for k, j in s["jobs"].items() if is_lost(j)),
            "run_twice": sorted(k for s in segments for k, j in s["jobs"].items() if ran_twice(j))}
    _el(svg, "metadata", json.dumps(data, separators=(",", ":")), id="demo-data")
    return ET.tostring(svg, encoding="unicode", xml_declaration=True)


def verify(svg_text: str, doc: dict[str, Any]) -> list[str]:
    """What in a drawn picture does not come from `doc`: empty when its embedded data (rows,
    task counts, lost and repeated task ids) is the run's own. `make demo` checks its picture so."""
    found = ET.fromstring(svg_text).find(f"{{{SVG_NS}}}metadata")
    if found is None or not found.text:
        return ["the picture carries no data"]
    data = json.loads(found.text)
    jobs = {k: j for seg in doc["segments"] for k, j in seg["jobs"].items()}
    expected = {
        "rows": [summary(seg) for seg in doc["segments"]],
        "started": sum(len(task_starts(j)) for j in jobs.values()),
        "completed": sum(len(j.get("finishes", [])) for j in jobs.values()),
        "lost": sorted(k for k, j in jobs.items() if is_lost(j)),
        "run_twice": sorted(k for k, j in jobs.items() if ran_twice(j)),
    }
    drawn = {"rows": data.get("rows"), "started": sum(data.get("started_per_second", [])),
             "completed": sum(data.get("completed_per_second", [])), "lost": data.get("lost"),
             "run_twice": data.get("run_twice")}
    return [f"{key}: the picture has {drawn[key]!r}, the run {expected[key]!r}"
            for key in expected if drawn[key] != expected[key]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run's JSON (scripts/demo_run.py)")
    parser.add_argument("-o", "--output", type=Path, help="the SVG to write (default: the run's name, .svg)")
    parser.add_argument("--table", action="store_true", help="print the table of the run too")
    parser.add_argument("--verify", action="store_true",
                        help="only check that the existing picture (-o) was drawn from this run's data")
    args = parser.parse_args(argv)
    doc = json.loads(args.run.read_text())
    out = args.output or args.run.with_suffix(".svg")
    if args.verify:
        problems = verify(out.read_text(), doc)
        for problem in problems:
            print(f"{out} is not drawn from {args.run}: {problem}", file=sys.stderr)
        return 1 if problems else 0
    out.write_text(render(doc))
    if args.table:
        print(table(doc))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
