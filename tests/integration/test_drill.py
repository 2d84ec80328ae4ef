"""Drills end to end: real nats-server, the real engine, the real camera adapter watching synthetic video
served over MJPEG, simulated units; the report checked against the INCIDENTS stream.

Short test scenarios (three incidents over about three simulated minutes at 10x) keep the wall time
modest: the quiet night runs twice on the session server (same seed: same assignments), the failure
night once on its own embedded server (the drill restarts it).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dispatch.events import DrillInject, DrillInjectResult, IncidentEvent, Point, UnitPosition, encode
from dispatch.subjects import Subjects
from simulators.drill import Drill, read_stream
from simulators.scenario import load_scenario

REPO = Path(__file__).resolve().parents[2]
TIESHAN = REPO / "config" / "districts" / "tieshan.yaml"
CAM03 = (30.2079451, 114.901426)

QUIET = f"""\
name: quiet-test
description: the quiet night, short
district: {TIESHAN}
speed: 10
seed: 7
units:
  real: [p15]                    # played by a person on a terminal: in this test, a unit in REAL operations
  answer_delay_s: {{median: 4, p90: 8}}
  decline_p: 0
  silent_p: 0
  on_scene_s: [30, 60]
cameras:
  fps: 10
  rules:
    running: {{speed: 1.6}}
incidents:
  - {{at: 10, camera: cam03, kind: intrusion}}
  - {{at: 70, camera: cam14, kind: camera_covered}}
  - {{at: 130, place: [30.2045, 114.9100], kind: medical, priority: 1}}
"""

FAILURES = f"""\
name: failures-test
district: {TIESHAN}
speed: 10
seed: 5
units:
  answer_delay_s: {{median: 4, p90: 8}}
  decline_p: 0
  silent_p: 0
  on_scene_s: [30, 60]
cameras:
  fps: 10
  rules:
    running: {{speed: 1.6}}
    offline: {{seconds: 3}}
incidents:
  - {{at: 30, camera: cam03, kind: intrusion}}
  - {{at: 160, camera: cam01, kind: intrusion}}
  - {{at: 175, place: [30.2045, 114.9100], kind: medical, priority: 1}}
failures:
  - {{at: 5, radio_silent: p07}}
  - {{at: 60, camera_dies: cam05, seconds: 600}}
  - {{at: 150, nats_restart: true}}
"""


@dataclass
class Run:
    drill: Drill
    report: dict[str, Any]
    prefix: str
    url: str
    inject_replies: list[dict[str, Any]]


async def _events(url: str, prefix: str, drill_id: str) -> list[IncidentEvent]:
    import nats

    nc = await nats.connect(url)
    try:
        s = Subjects(prefix)
        evs = [IncidentEvent.model_validate_json(m.data) for m in await read_stream(nc, s.stream_incidents, s.all_incident_events)]
    finally:
        await nc.close()
    return [e for e in evs if e.exercise == drill_id]


async def _run_quiet(url: str, out: Path, inject: bool) -> Run:
    """The quiet test night under a fresh prefix, with a real unit (no exercise id) standing at cam03 throughout."""
    import nats

    scenario_file = out.parent / f"{out.name}.yaml"
    scenario_file.write_text(QUIET)
    sc = load_scenario(scenario_file)
    prefix = uuid.uuid4().hex[:8]
    s = Subjects(prefix)
    nc = await nats.connect(url)
    stop = asyncio.Event()
    replies: list[dict[str, Any]] = []

    async def real_unit() -> None:  # right at cam03: the best unit for incident #1, if it were in the drill
        while not stop.is_set():
            await nc.publish(s.unit_position("p15"), encode(UnitPosition(unit="p15", lat=CAM03[0], lon=CAM03[1])))
            await asyncio.sleep(0.3)

    drill = Drill(sc, nats_urls=[url], prefix=prefix, out_dir=out, progress=False)

    cam03_open: set[str] = set()
    closed: set[str] = set()

    async def follow(msg: Any) -> None:
        e = IncidentEvent.model_validate_json(msg.data)
        if e.camera == "cam03" and e.event.value == "opened":
            cam03_open.add(e.incident_id)
        elif e.event.value in ("resolved", "cancelled"):
            closed.add(e.incident_id)

    async def trainer() -> None:  # `patrollink drill inject` speaks this request/reply
        # after the timeline's last incident, and once cam03's incident is closed: an intrusion injected
        # at cam03 while that one is still open would rightly join it instead of opening its own
        while not (drill.clock.started and drill.clock.now() > 150 and cam03_open and cam03_open <= closed):
            await asyncio.sleep(0.1)
        for req in (DrillInject(camera="cam09", kind="fight"), DrillInject(camera="cam03", kind="intrusion"),
                    DrillInject(at=Point(lat=30.2019437, lon=114.901259), kind="theft", priority=2)):
            m = await nc.request(s.drill_inject(), encode(req), timeout=5)
            replies.append(DrillInjectResult.model_validate_json(m.data).model_dump())

    await nc.subscribe(s.all_incident_events, cb=follow)
    tasks = [asyncio.create_task(real_unit())] + ([asyncio.create_task(trainer())] if inject else [])
    try:
        report = await drill.run()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await nc.close()
    return Run(drill, report, prefix, url, replies)


@pytest.fixture(scope="module")
async def quiet(nats_server, tmp_path_factory) -> Run:
    return await _run_quiet(nats_server.url, tmp_path_factory.mktemp("drill") / "a", inject=True)


# --------------------------------------------------------------------------- the quiet night


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_quiet_night_at_10x_every_incident_detected_dispatched_acknowledged_served(quiet: Run) -> None:
    r = quiet.report
    timeline = [i for i in r["incidents"] if i["source"] == "timeline"]
    assert len(timeline) == 3
    for i in timeline:
        assert i["detected"], i
        assert i["kind_as_expected"], i
        assert i["order"] and i["ack"] and i["on_scene"] and i["closed_as"] == "resolved", i
        assert i["unit"] and i["unit"] != "p15"
    cams = [i for i in timeline if i["camera"]]
    assert all(0 <= i["detect_s"] < 15 for i in cams), [i["detect_s"] for i in cams]
    t = r["totals"]
    assert t["detection_recall"] == 1.0
    assert t["false_alerts"] == 0, json.dumps(r["false_alerts"])  # what fired, to tell a flaky scene from a rule
    assert r["checks"]["alerts"]["pass"] and r["checks"]["orders"]["pass"], r["checks"]
    assert r["result"] == "PASS", json.dumps(r["verdicts"])
    assert r["drill"]["speed"] == 10 and r["drill"]["sim_s"] > 130


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_report_agrees_with_the_incident_events_on_the_stream(quiet: Run) -> None:
    r = quiet.report
    speed = r["drill"]["speed"]
    evs = await _events(quiet.url, quiet.prefix, r["drill"]["id"])
    by: dict[str, list[IncidentEvent]] = defaultdict(list)
    for e in evs:
        by[e.incident_id].append(e)
    reported = [i["incident_id"] for i in r["incidents"] if i["incident_id"]] + [x["incident_id"] for x in r["related"] + r["false_alerts"]]
    assert sorted(reported) == sorted(by), "every incident of the drill is in the report, once"
    assert r["totals"]["incidents_total"] == len(by)
    for row in r["incidents"]:
        es = sorted(by[row["incident_id"]], key=lambda e: e.seq)
        t = {k: next((e.time.timestamp() for e in es if e.event.value in kinds), None) for k, kinds in (
            ("alert", ("opened",)), ("order", ("assigned",)), ("ack", ("acknowledged", "en_route")), ("on_scene", ("on_scene",)),
            ("resolved", ("resolved", "cancelled")))}
        for stage in ("order", "ack", "on_scene", "resolved"):
            assert row["stages_s"][stage] == pytest.approx((t[stage] - t["alert"]) * speed, abs=0.02), (row["n"], stage)
        assert row["unit"] == next(e.unit for e in es if e.event.value == "on_scene")
        if row["camera"]:
            started = row["truth"]["start"]
            assert row["detect_s"] == pytest.approx(t["alert"] - _ts(started), abs=0.02)
    served = [i["stages_s"]["on_scene"] for i in r["incidents"]]
    assert r["percentiles_s"]["on_scene"]["max"] == pytest.approx(max(served), abs=0.01)
    assert r["totals"]["served"] == sum(1 for i in r["incidents"] if i["on_scene"])


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_drill_traffic_never_reaches_a_real_unit(quiet: Run) -> None:
    import nats

    drill_id = quiet.report["drill"]["id"]
    s = Subjects(quiet.prefix)
    nc = await nats.connect(quiet.url)
    try:
        radio = [json.loads(m.data) for m in await read_stream(nc, s.stream_radio, f"{quiet.prefix}.radio.>")]
        alerts = [json.loads(m.data) for m in await read_stream(nc, s.stream_alerts, s.all_alerts)]
    finally:
        await nc.close()
    assert radio and alerts
    assert not [m for m in radio if m.get("unit") == "p15"], "the real unit at the camera never got a drill order"
    assert {m.get("exercise") for m in radio} == {drill_id}, "every order and reply carries the drill id"
    assert {(a["exercise"], a["status"]) for a in alerts} == {(drill_id, "Exercise")}
    evs = await _events(quiet.url, quiet.prefix, drill_id)
    first = quiet.report["incidents"][0]
    assigned = next(e for e in evs if e.incident_id == first["incident_id"] and e.event.value == "assigned")
    skipped = {sk.unit: sk.reason for sk in assigned.explanation.skipped}
    assert "drill" in skipped.get("p15", ""), skipped


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_trainer_injects_incidents_into_the_running_drill(quiet: Run) -> None:
    assert [x["ok"] for x in quiet.inject_replies] == [False, True, True], quiet.inject_replies
    assert "cam09" in quiet.inject_replies[0]["error"] and "not in this drill" in quiet.inject_replies[0]["error"]
    trainer = [i for i in quiet.report["incidents"] if i["source"] == "trainer"]
    assert [(i["camera"], i["expected_kind"]) for i in trainer] == [("cam03", "intrusion"), (None, "theft")]
    assert all(i["detected"] and i["on_scene"] for i in trainer), trainer


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_report_files_exist_and_show_the_drill(quiet: Run) -> None:
    out = quiet.drill.out_dir
    data = json.loads((out / "report.json").read_text())
    assert data["drill"]["id"] == quiet.report["drill"]["id"] and data["result"] in ("PASS", "FAIL")
    for name in ("timeline.png", "response.png", "map.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name
    html = (out / "report.html").read_text()
    for name in ("timeline.png", "response.png", "map.png", quiet.report["result"], quiet.report["drill"]["id"]):
        assert name in html


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_same_seed_gives_the_same_assignments(quiet: Run, nats_server, tmp_path) -> None:
    again = await _run_quiet(nats_server.url, tmp_path / "b", inject=False)

    def assignments(r: dict[str, Any]) -> list[tuple[float, str | None, list[str]]]:
        return [(i["at_s"], i["unit"], [a["unit"] for a in i["attempts"] if a["event"] == "assigned"])
                for i in r["incidents"] if i["source"] == "timeline"]

    assert assignments(again.report) == assignments(quiet.report)


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_failure_night(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATROLLINK_STATE", str(tmp_path / "state"))
    path = tmp_path / "failures.yaml"
    path.write_text(FAILURES)
    drill = Drill(load_scenario(path), out_dir=tmp_path / "out", progress=False)  # its own embedded server
    r = await drill.run()
    c = r["checks"]
    silent, dies, restart = (c[k] for k in sorted(k for k in c if k.startswith("failure #")))
    # the silent unit's order timed out and went to the next unit
    assert silent["orders_to_unit"] >= 1 and silent["timed_out_and_passed_on"] == silent["orders_to_unit"], silent
    first = r["incidents"][0]
    assert [a["event"] for a in first["attempts"]][:3] == ["assigned", "timed_out", "assigned"], first["attempts"]
    assert first["attempts"][0]["unit"] == "p07" and first["unit"] != "p07"
    # the dead camera raised camera_offline
    assert dies["camera_offline_alert"] and 2.0 <= dies["after_real_s"] < 15.0, dies
    assert any(x["kind"] == "camera_offline" and x["camera"] == "cam05" for x in r["related"])
    # after the NATS restart no alert and no order was lost, and what came after was served
    assert restart["pass"] and restart["alerts_lost"] == 0 and restart["orders_lost"] == 0, restart
    assert c["alerts"]["stored"] >= c["alerts"]["raised"] > 0
    assert c["orders"]["lost"] == 0 and c["orders"]["missed_radio_silent"] >= 1
    after = [i for i in r["incidents"] if i["at_s"] >= 150]
    assert len(after) == 2 and all(i["detected"] and i["on_scene"] for i in after), after
    assert r["result"] == "PASS", (r["verdicts"], c)


# --------------------------------------------------------------------------- mistakes


def test_a_bad_scenario_fails_before_anything_starts(tmp_path, capsys, monkeypatch) -> None:
    from dispatch.cli import main

    monkeypatch.setenv("PATROLLINK_STATE", str(tmp_path / "state"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUIET.replace("camera: cam03", "camera: cam99").replace("at: 70,", "at: -70,").replace("real: [p15]", "real: [p51]"))
    t0 = time.monotonic()
    assert main(["drill", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert time.monotonic() - t0 < 10
    err = capsys.readouterr().err
    assert f"{bad}:7: units.real[0]: unit 'p51' is not in district Tieshan" in err
    assert f"{bad}:17: incidents[0].camera: unknown camera 'cam99'" in err
    assert f"{bad}:18: incidents[1].at: input should be greater than or equal to 0" in err
    assert "nothing was started" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "state").exists()
