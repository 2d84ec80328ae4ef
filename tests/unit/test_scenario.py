"""The drill scenario loader: the shipped scenarios load, and every mistake is reported before anything
starts, naming the file, the line and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.scenario import ScenarioError, check_scenario, load_scenario
from simulators.units import Delay

REPO = Path(__file__).resolve().parents[2]
TIESHAN = REPO / "config" / "districts" / "tieshan.yaml"
SCENARIOS = sorted((REPO / "config" / "scenarios").glob("*.yaml"))

GOOD = f"""\
name: t
district: {TIESHAN}
speed: 10
seed: 3
units:
  real: [p15]
  answer_delay_s: {{median: 4, p90: 8}}
  on_scene_s: [40, 80]
cameras:
  rules:
    running: {{speed: 1.6}}
incidents:
  - {{at: 10, camera: cam03, kind: intrusion}}
  - {{at: 60, place: [30.2045, 114.91], kind: medical, priority: 1}}
  - {{at: 90, camera: cam07, kind: cover}}
  - {{at: 95, place: lukou, kind: scuffle}}
failures:
  - {{at: 100, camera_dies: cam05, seconds: 60}}
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    return [str(i) for i in e.value.issues]


def one(tmp_path: Path, text: str, field: str) -> str:
    """The one problem about `field`; asserts it names the file and a line."""
    found = [p for p in problems(tmp_path, text) if f": {field}: " in p]
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 's.yaml'}:"), found[0]
    return found[0]


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_the_shipped_scenarios_load(path: Path) -> None:
    assert check_scenario(path) == []
    sc = load_scenario(path)
    assert sc.incidents and sc.district_obj.name == "Tieshan"
    assert set(sc.drilled_cameras) <= {c.id for c in sc.district_obj.cameras}


def test_three_scenarios_ship_quiet_busy_and_failures() -> None:
    assert {p.stem for p in SCENARIOS} >= {"quiet-night", "busy-friday", "failures"}
    busy = load_scenario(REPO / "config" / "scenarios" / "busy-friday.yaml")
    at = sorted(i.at for i in busy.incidents)
    assert any(b - a < 60 for a, b in zip(at, at[1:])), "busy Friday has overlapping incidents"
    fail = load_scenario(REPO / "config" / "scenarios" / "failures.yaml")
    assert {f.what.split()[-1] for f in fail.failures} >= {"dies", "silent", "restarts"}


def test_a_good_scenario_and_what_the_runner_reads_from_it(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, GOOD))
    assert sc.source == (tmp_path / "s.yaml").resolve()
    assert sc.drilled_cameras == ["cam03", "cam07", "cam05"]
    assert "p15" not in sc.simulated_units and len(sc.simulated_units) == len(sc.district_obj.units) - 1
    assert sc.incidents[2].scripted_kind == "camera_covered" and sc.incidents[2].incident_kind.value == "camera_tamper"
    assert sc.incidents[3].incident_kind.value == "fight"
    b = sc.units.behaviour()
    assert b.answer_delay == Delay.lognormal(4, 8) and b.on_scene == Delay.uniform(40, 80)
    assert b.position_interval_s == 10.0  # the default
    assert sc.last_event_s == 100 and sc.max_duration_s == 1900
    assert sc.targets.order_within_s == 60 and sc.targets.order_fraction == 0.9 and sc.targets.on_scene_within_s == 300


def test_unknown_camera_names_file_line_field_and_a_suggestion(tmp_path: Path) -> None:
    msg = one(tmp_path, GOOD.replace("camera: cam03", "camera: cam33"), "incidents[0].camera")
    assert ":13: " in msg and "unknown camera 'cam33'" in msg and "did you mean 'cam13'" in msg


def test_negative_offset(tmp_path: Path) -> None:
    msg = one(tmp_path, GOOD.replace("at: 60,", "at: -5,"), "incidents[1].at")
    assert ":14: " in msg and "greater than or equal to 0" in msg and "-5" in msg


def test_units_not_in_the_district(tmp_path: Path) -> None:
    text = GOOD.replace("real: [p15]", "real: [p99]\n  simulated: [p01, x7]") + "  - {at: 5, radio_silent: p77}\n"
    all_ = problems(tmp_path, text)
    assert any(":6: units.real[0]: unit 'p99' is not in district Tieshan" in p for p in all_), all_
    assert any(":7: units.simulated[1]: unit 'x7' is not in district Tieshan" in p for p in all_), all_
    assert any(":20: failures[1].radio_silent: unit 'p77' is not in district Tieshan; did you mean 'p07'?" in p for p in all_), all_


def test_a_unit_both_simulated_and_real(tmp_path: Path) -> None:
    msg = one(tmp_path, GOOD.replace("real: [p15]", "real: [p15]\n  simulated: [p15, p01]"), "units.real[0]")
    assert "simulated and as real" in msg


def test_every_problem_at_once_in_line_order(tmp_path: Path) -> None:
    text = GOOD.replace("camera: cam03", "camera: cam33").replace("at: 60,", "at: -5,").replace("speed: 10", "speed: 0")
    text = text.replace("seed: 3", "seed: 3\ncolour: red")
    found = problems(tmp_path, text)
    fields = [p.split(": ")[1] for p in found]
    assert fields == ["speed", "colour", "incidents[0].camera", "incidents[1].at"], found
    assert "unknown field 'colour'" in found[1]
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)


def test_unknown_field_suggests_the_right_one(tmp_path: Path) -> None:
    msg = one(tmp_path, GOOD + "targets:\n  order_within: 30\n", "targets.order_within")
    assert "did you mean 'order_within_s'" in msg


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("kind: intrusion", "kind: medical"), "incidents[0].kind", "a camera cannot play 'medical'"),
        (("kind: medical,", "kind: medicl,"), "incidents[1].kind", "did you mean 'medical'"),
        (("place: [30.2045, 114.91]", "place: [31.5, 114.91]"), "incidents[1].place", "outside district Tieshan"),
        (("place: lukou", "place: lukow"), "incidents[3].place", "did you mean 'lukou'"),
        (("{at: 10, camera: cam03,", "{at: 10, camera: cam03, place: lukou,"), "incidents[0]", "exactly one of camera"),
        (("camera_dies: cam05, seconds: 60", "camera_dies: cam05, nats_restart: true"), "failures[0]", "exactly one of"),
        (("on_scene_s: [40, 80]", "on_scene_s: [80, 40]"), "units.on_scene_s", "0 <= lo <= hi"),
        (("answer_delay_s: {median: 4, p90: 8}", "answer_delay_s: {median: 4, p99: 8}"), "units.answer_delay_s", "p99"),
        (("running: {speed: 1.6}", "running: {speed: -1}"), "cameras.rules.running.speed", "greater than 0"),
        (("speed: 10", "speed: 10\nduration_s: 50"), "duration_s", "before its last scripted event at 100 s"),
        (("speed: 10", "speed: 10\nclock_start: '25:00'"), "clock_start", "HH:MM"),
    ],
)
def test_mistakes_name_their_field(tmp_path: Path, change: tuple[str, str], field: str, words: str) -> None:
    assert change[0] in GOOD
    msg = one(tmp_path, GOOD.replace(change[0], change[1], 1), field)
    assert words in msg, msg


def test_conflicting_priorities_for_one_camera_rule(tmp_path: Path) -> None:
    text = GOOD + "  - {at: 20, camera: cam03, kind: intrusion, priority: 1}\n  - {at: 30, camera: cam03, kind: intrusion, priority: 3}\n"
    text = text.replace("failures:\n  - {at: 100, camera_dies: cam05, seconds: 60}\n", "") + ""
    text = text.replace("incidents:\n", "failures: []\nincidents:\n")
    msg = one(tmp_path, text, "incidents[5].priority")
    assert "incidents[4] already asks for 1" in msg


def test_the_district_file_missing_or_broken(tmp_path: Path) -> None:
    msg = one(tmp_path, GOOD.replace(str(TIESHAN), "nowhere/tieshan.yaml"), "district")
    assert ":2: " in msg and "file not found" in msg
    bad = tmp_path / "d.yaml"
    bad.write_text(TIESHAN.read_text().replace("timezone: Asia/Shanghai", "timezone: Mars/Olympus"))
    (tmp_path / "tieshan-streets.geojson").symlink_to(TIESHAN.parent / "tieshan-streets.geojson")
    found = problems(tmp_path, GOOD.replace(str(TIESHAN), "d.yaml"))  # relative to the scenario file
    assert any(": district: district file" in p and "problem(s)" in p for p in found), found
    assert any(p.startswith(f"{bad}:") and "timezone" in p for p in found), found


def test_yaml_syntax_and_empty_files(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: t\nincidents: [\n")
    assert len(found) == 1 and "YAML syntax error" in found[0] and found[0].startswith(f"{tmp_path / 's.yaml'}:")
    assert "the file is empty" in problems(tmp_path, "")[0]
    assert "must be a mapping" in problems(tmp_path, "- a\n- b\n")[0]
    with pytest.raises(ScenarioError, match="file not found"):
        load_scenario(tmp_path / "absent.yaml")


# --------------------------------------------------------------------------- the scene's drill incidents


def test_scene_add_incident_scripts_each_kind_with_its_ground_truth() -> None:
    from simulators.scene import Scene

    sc = Scene(seed=3, fps=5)
    got = {k: sc.add_incident(k, 10.0 + 40 * i, variant=i) for i, k in enumerate(
        ("intrusion", "loitering", "fight", "crowd", "camera_covered", "stream_dies"))}
    assert got["intrusion"]["incident_kind"] == "intrusion" and len(got["intrusion"]["ids"]) == 1
    assert got["loitering"]["seconds"] == 40.0 and got["fight"]["seconds"] == 20.0 and len(got["fight"]["ids"]) == 2
    assert len(got["crowd"]["ids"]) == 7 and got["camera_covered"]["incident_kind"] == "camera_tamper"
    assert got["stream_dies"]["incident_kind"] == "camera_offline" and got["stream_dies"]["ids"] == []
    kinds = {e["kind"] for e in sc.events()}
    assert {"intrusion", "loitering", "fight", "crowd", "camera_tamper", "camera_offline"} <= kinds
    intr = [e for e in sc.events() if e["kind"] == "intrusion" and e["ids"] == got["intrusion"]["ids"]]
    assert intr and 10.0 < intr[0]["start"] < 16.0
    assert not sc.stream_alive(211.0) and sc.stream_alive(209.0)
    with pytest.raises(ValueError, match="unknown incident kind"):
        sc.add_incident("parade", 1.0)


def test_scene_add_incident_while_frames_are_rendered() -> None:
    """A drill injects from the event loop while the MJPEG server renders in its threads."""
    import threading

    from simulators.scene import Scene

    sc = Scene(seed=1, fps=5)
    stop = threading.Event()
    errors: list[BaseException] = []

    def render() -> None:
        t = 0.0
        while not stop.is_set():
            try:
                sc.render(t)
            except BaseException as e:  # noqa: BLE001 - any error is the failure
                errors.append(e)
                return
            t += 0.2

    th = threading.Thread(target=render)
    th.start()
    try:
        for i in range(40):
            sc.add_incident(("intrusion", "crowd", "fight")[i % 3], 0.5 + i * 0.3, variant=i)
    finally:
        stop.set()
        th.join()
    assert not errors, errors
    assert len(sc.actors) == sum((1, 7, 2)[i % 3] for i in range(40))
