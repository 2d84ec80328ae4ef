"""District configuration: loading, validation with file/line/field, the Tieshan sample."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from dispatch.district import (
    DEFAULT_KINDS,
    Camera,
    Community,
    ConfigError,
    ConfigIssue,
    District,
    KindRule,
    Policy,
    Streets,
    Unit,
    check_config,
    load_district,
)
from dispatch.events import CapCategory, IncidentKind, Point, TravelMode, UnitKind

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "config" / "districts" / "tieshan.yaml"
SAMPLE_STREETS = ROOT / "config" / "districts" / "tieshan-streets.geojson"

# --------------------------------------------------------------------------- a small district to break

BASE = """\
name: Testville
timezone: Asia/Shanghai
center: {lat: 30.2, lon: 114.9}
communities:
  - id: east
    name: East
    boundary: [[30.19, 114.90], [30.19, 114.91], [30.21, 114.91], [30.21, 114.90]]
  - id: west
    name: West
    boundary: [[30.19, 114.89], [30.19, 114.90], [30.21, 114.90], [30.21, 114.89]]
cameras:
  - id: cam01
    name: East gate
    community: east
    position: {lat: 30.2, lon: 114.905}
    stream: rtsp://127.0.0.1:8554/cam01
    zones:
      - name: gate
        polygon: [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0], [0.2, 1.0]]
        restricted: true
units:
  - {id: p01, callsign: Test 01, kind: police, mode: car, beat: east, talkgroup: police}
  - {id: a01, callsign: Aux 01, kind: auxiliary, mode: bicycle, beat: west, talkgroup: auxiliary, home: [30.2, 114.895]}
  - {id: v-west, callsign: Volunteer West, kind: volunteer, mode: foot, beat: west, talkgroup: volunteers}
"""


def write(tmp_path: Path, text: str, name: str = "d.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the nth line containing needle."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) > nth, f"{needle!r} not in the test YAML"
    return hits[nth]


def issues_of(tmp_path: Path, text: str) -> list[ConfigIssue]:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_district(p)
    assert info.value.issues == check_config(p)
    return info.value.issues


def only(issues: list[ConfigIssue], field: str) -> ConfigIssue:
    found = [i for i in issues if i.field == field]
    assert len(found) == 1, f"expected one issue on {field}, got {issues}"
    return found[0]


# --------------------------------------------------------------------------- the happy path


def test_small_district_loads_and_fills_defaults(tmp_path):
    p = write(tmp_path, BASE)
    d = load_district(p)
    assert check_config(p) == []
    assert d.source == p.resolve()
    assert d.streets is None and d.load_streets() is None
    assert [c.id for c in d.communities] == ["east", "west"]
    # a unit without home starts from its beat's centroid; [lat, lon] pairs are points too
    home = d.unit("p01").home
    assert (home.lat, home.lon) == (pytest.approx(30.2), pytest.approx(114.905))
    assert d.unit("a01").home == Point(lat=30.2, lon=114.895)
    assert d.policy == Policy()
    assert d.talkgroups == {"police", "auxiliary", "volunteers", "supervisors"}
    assert d.camera("cam01").zone("gate").restricted is True
    assert d.camera("nope") is None and d.unit("nope") is None and d.community("nope") is None


def test_districts_compare_by_configuration_not_by_file_or_cache(tmp_path):
    a = load_district(write(tmp_path, BASE, "a.yaml"))
    b = load_district(write(tmp_path, BASE, "b.yaml"))
    a.camera("cam01")  # builds a's look-up index
    assert a == b
    assert a.model_copy(update={"name": "Other"}) != a


def test_models_are_frozen(tmp_path):
    d = load_district(write(tmp_path, BASE))
    with pytest.raises(ValidationError):
        d.name = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        d.cameras[0].stream = "device:1"  # type: ignore[misc]


def test_contains_covers_communities_and_the_margin_but_not_beyond(tmp_path):
    d = load_district(write(tmp_path, BASE))
    assert d.contains(30.2, 114.905)
    # 300 m north of the top edge (30.21): inside the default 500 m margin
    assert d.contains(30.21 + 300 / 111_320, 114.9)
    # 800 m north: outside
    assert not d.contains(30.21 + 800 / 111_320, 114.9)
    assert d.community_at(30.2, 114.895).id == "west"
    assert d.community_at(30.3, 114.895) is None


def test_community_centroid_of_a_rectangle_is_its_middle():
    c = Community(id="x", name="X", boundary=((30.0, 114.0), (30.0, 114.02), (30.01, 114.02), (30.01, 114.0)))
    assert c.centroid.lat == pytest.approx(30.005)
    assert c.centroid.lon == pytest.approx(114.01)
    assert 2.0e6 < c.area_m2 < 2.2e6  # ~1.11 km x ~1.92 km


# --------------------------------------------------------------------------- issues: where and what


def test_issue_prints_as_file_line_field_reason():
    i = ConfigIssue("tieshan.yaml", 123, "cameras[3].zones[0].polygon", "needs at least 3 points")
    assert str(i) == "tieshan.yaml:123: cameras[3].zones[0].polygon: needs at least 3 points"
    assert str(ConfigIssue("x.yaml", None, "", "file not found")) == "x.yaml: file not found"


def test_config_error_lists_every_issue_one_per_line():
    issues = [ConfigIssue("a.yaml", 1, "name", "bad"), ConfigIssue("a.yaml", 7, "units[0].id", "worse")]
    err = ConfigError(issues)
    assert str(err).splitlines() == ["a.yaml:1: name: bad", "a.yaml:7: units[0].id: worse"]
    assert err.issues == issues


def test_unknown_camera_community_is_reported_with_file_line_and_field(tmp_path):
    text = BASE.replace("    community: east", "    community: eats")
    p = write(tmp_path, text)
    issues = check_config(p)
    assert len(issues) == 1
    i = issues[0]
    assert i.file == str(p)
    assert i.line == line_of(text, "community: eats")
    assert i.field == "cameras[0].community"
    assert "'eats'" in i.reason and "not defined" in i.reason and "did you mean 'east'" in i.reason


def test_unknown_unit_beat_is_reported(tmp_path):
    text = BASE.replace("beat: west, talkgroup: volunteers", "beat: north, talkgroup: volunteers")
    i = only(issues_of(tmp_path, text), "units[2].beat")
    assert i.line == line_of(text, "beat: north")
    assert "community 'north'" in i.reason


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    text = (
        BASE.replace("timezone: Asia/Shanghai", "timezone: Asia/Wuhan")
        .replace("    community: east", "    community: nowhere")
        .replace("[0.8, 0.5], [0.8, 1.0]", "[1.5, 0.5], [0.8, 1.0]")
        .replace("kind: volunteer, mode: foot", "kind: volunteer, mode: car")
        .replace("id: a01", "id: p01")
    )
    text += "policy:\n  max_attempts: 0\n  ack_timeout_s: {1: 20, 3: 45}\n"
    issues = issues_of(tmp_path, text)
    fields = {i.field for i in issues}
    assert fields == {
        "timezone",
        "cameras[0].community",
        "cameras[0].zones[0].polygon",
        "units[2].mode",
        "units[1].id",
        "policy.max_attempts",
        "policy.ack_timeout_s",
    }
    assert all(i.line is not None and i.file.endswith("d.yaml") for i in issues)
    assert [i.line for i in issues] == sorted(i.line for i in issues)  # in file order


def test_zone_outside_frame_is_refused(tmp_path):
    text = BASE.replace("[0.8, 0.5], [0.8, 1.0]", "[1.2, 0.5], [0.8, 1.0]")
    i = only(issues_of(tmp_path, text), "cameras[0].zones[0].polygon")
    assert i.reason == "zone 'gate' point 2 (1.2, 0.5) is outside the frame (0..1)"
    assert i.line == line_of(text, "polygon:")


def test_zone_needs_at_least_three_points(tmp_path):
    text = BASE.replace("[[0.2, 0.5], [0.8, 0.5], [0.8, 1.0], [0.2, 1.0]]", "[[0.2, 0.5], [0.8, 0.5]]")
    i = only(issues_of(tmp_path, text), "cameras[0].zones[0].polygon")
    assert i.reason.startswith("needs at least 3 points")


def test_zone_name_twice_on_one_camera_is_refused(tmp_path):
    text = BASE.replace(
        "        restricted: true\n",
        "        restricted: true\n      - name: gate\n        polygon: [[0, 0], [1, 0], [1, 1]]\n",
    )
    i = only(issues_of(tmp_path, text), "cameras[0].zones")
    assert "'gate' is used twice" in i.reason


def test_community_boundary_needs_three_points_and_an_area(tmp_path):
    two = BASE.replace(
        "[[30.19, 114.90], [30.19, 114.91], [30.21, 114.91], [30.21, 114.90]]", "[[30.19, 114.90], [30.19, 114.91]]"
    )
    i = only(issues_of(tmp_path, two), "communities[0].boundary")
    assert i.reason == "needs at least 3 points, got 2"
    flat = BASE.replace(
        "[[30.19, 114.90], [30.19, 114.91], [30.21, 114.91], [30.21, 114.90]]",
        "[[30.19, 114.90], [30.19, 114.91], [30.19, 114.92]]",
    )
    assert "zero area" in only(issues_of(tmp_path, flat), "communities[0].boundary").reason


def test_boundary_written_lon_lat_gets_a_hint(tmp_path):
    text = BASE.replace(
        "[[30.19, 114.90], [30.19, 114.91], [30.21, 114.91], [30.21, 114.90]]",
        "[[114.90, 30.19], [114.91, 30.19], [114.91, 30.21], [114.90, 30.21]]",
    )
    i = only(issues_of(tmp_path, text), "communities[0].boundary")
    assert "point 1 (114.9, 30.19)" in i.reason and "write [lat, lon]" in i.reason


def test_volunteer_kind_rule_cannot_be_violent(tmp_path):
    text = BASE + "policy:\n  kinds:\n    fight: {unit_kinds: [police, volunteer]}\n"
    i = only(issues_of(tmp_path, text), "policy.kinds.fight.unit_kinds")
    assert i.reason == "volunteers never take violent incidents"
    assert i.line == line_of(text, "fight:")
    with pytest.raises(ValidationError, match="volunteers never take violent incidents"):
        KindRule(violent=True, category=CapCategory.Security, default_priority=1, unit_kinds=(UnitKind.volunteer,))


def test_volunteer_unit_cannot_drive(tmp_path):
    text = BASE.replace("kind: volunteer, mode: foot", "kind: volunteer, mode: motorbike")
    i = only(issues_of(tmp_path, text), "units[2].mode")
    assert i.reason == "volunteers patrol on foot or by bicycle, not by motorbike"
    assert i.line == line_of(text, "mode: motorbike")


def test_yaml_syntax_error_names_line(tmp_path):
    text = BASE.replace("    name: East gate\n", "    name: East gate\n    stream: [unclosed\n", 1)
    issues = issues_of(tmp_path, text)
    assert len(issues) == 1
    assert issues[0].reason.startswith("YAML syntax error")
    assert issues[0].line is not None and abs(issues[0].line - line_of(text, "[unclosed")) <= 1


def test_tab_indentation_is_a_syntax_error_with_its_line(tmp_path):
    text = BASE.replace("  - id: west", "\t- id: west")
    (i,) = issues_of(tmp_path, text)
    assert i.line == line_of(text, "\t- id: west")
    assert "YAML syntax error" in i.reason


def test_missing_file_is_a_config_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_district(missing)
    (i,) = info.value.issues
    assert i.file == str(missing) and "file not found" in i.reason


def test_empty_file_and_a_list_at_top_level_are_refused(tmp_path):
    (i,) = issues_of(tmp_path, "# nothing here\n")
    assert "empty" in i.reason
    (i,) = issues_of(tmp_path, "- a\n- b\n")
    assert i.line == 1 and "mapping" in i.reason


def test_missing_street_file_names_resolved_path(tmp_path):
    text = BASE + "streets:\n  file: maps/streets.geojson\n"
    i = only(issues_of(tmp_path, text), "streets.file")
    assert str((tmp_path / "maps" / "streets.geojson").resolve()) in i.reason
    assert "does not exist" in i.reason
    assert i.line == line_of(text, "file: maps/streets.geojson")


def test_street_file_that_does_not_load_is_reported_on_streets_file(tmp_path):
    (tmp_path / "bad.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    text = BASE + "streets:\n  file: bad.geojson\n"
    i = only(issues_of(tmp_path, text), "streets.file")
    assert "cannot be loaded" in i.reason and "no streets" in i.reason


def test_streets_load_relative_to_the_yaml_and_are_cached(tmp_path, monkeypatch):
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "s.geojson").write_text(SAMPLE_STREETS.read_text())
    p = write(tmp_path, BASE + "streets:\n  file: maps/s.geojson\n  speeds_kmh: {car: 30}\n")
    monkeypatch.chdir("/")
    d = load_district(p)
    assert d.streets.speeds_kmh == {TravelMode.foot: 5, TravelMode.bicycle: 15, TravelMode.motorbike: 35, TravelMode.car: 30}
    assert d.streets_path == (tmp_path / "maps" / "s.geojson").resolve()
    g = d.load_streets()
    assert g is d.load_streets()
    assert g.speeds_kmh["car"] == 30
    assert g.node_count > 100


def test_speeds_must_be_positive(tmp_path):
    (tmp_path / "s.geojson").write_text(SAMPLE_STREETS.read_text())
    text = BASE + "streets:\n  file: s.geojson\n  speeds_kmh: {foot: 0}\n"
    i = only(issues_of(tmp_path, text), "streets.speeds_kmh")
    assert i.reason == "speed for foot must be a positive number of km/h, got 0"


def test_partial_kinds_merge_over_defaults(tmp_path):
    text = BASE + "policy:\n  kinds:\n    theft: {default_priority: 1}\n    loitering: {unit_kinds: [volunteer]}\n"
    d = load_district(write(tmp_path, text))
    kinds = d.policy.kinds
    assert set(kinds) == set(IncidentKind)
    assert kinds[IncidentKind.theft] == DEFAULT_KINDS[IncidentKind.theft].model_copy(update={"default_priority": 1})
    assert kinds[IncidentKind.loitering].unit_kinds == (UnitKind.volunteer,)
    assert kinds[IncidentKind.loitering].violent is False
    for k in set(IncidentKind) - {IncidentKind.theft, IncidentKind.loitering}:
        assert kinds[k] == DEFAULT_KINDS[k]


def test_unknown_incident_kind_is_reported_once(tmp_path):
    text = BASE + "policy:\n  kinds:\n    arson: {violent: true}\n"
    issues = issues_of(tmp_path, text)
    assert len(issues) == 1
    assert issues[0].field == "policy.kinds.arson" and issues[0].line == line_of(text, "arson:")
    assert issues[0].reason.startswith("unknown key 'arson': input should be 'assault'")


def test_policy_rejects_missing_priority_timeout(tmp_path):
    text = BASE + "policy:\n  ack_timeout_s: {1: 20, 3: 45}\n"
    i = only(issues_of(tmp_path, text), "policy.ack_timeout_s")
    assert i.reason == "missing timeout for priority 2 (needs one for each of 1, 2 and 3)"
    assert i.line == line_of(text, "ack_timeout_s")
    with pytest.raises(ValidationError, match="priority 4 does not exist"):
        Policy(ack_timeout_s={1: 1, 2: 2, 3: 3, 4: 4})
    with pytest.raises(ValidationError, match="timeout for priority 3 must be a positive"):
        Policy(ack_timeout_s={1: 1, 2: 2, 3: 0})


def test_priority_one_cannot_be_preempted():
    with pytest.raises(ValidationError, match="priority-1 incident cannot be pre-empted"):
        Policy(preemptable_priorities=(1, 3))
    assert Policy(preemptable_priorities=(3, 2, 3)).preemptable_priorities == (2, 3)


def test_policy_answers_timeouts_rules_and_who_may_take_what():
    p = Policy()
    assert [p.ack_timeout(k) for k in (1, 2, 3)] == [20, 30, 45]
    with pytest.raises(ValueError, match="priority 4 does not exist"):
        p.ack_timeout(4)
    assert p.rule("weapon").unit_kinds == (UnitKind.police,)
    assert not p.allows(IncidentKind.weapon, UnitKind.auxiliary)
    assert p.allows("loitering", "volunteer")
    assert p.allows(IncidentKind.camera_offline, UnitKind.volunteer)
    assert p.rule(IncidentKind.camera_tamper).default_priority == 3


def test_default_rules_cover_every_kind_and_keep_volunteers_off_violence():
    assert set(DEFAULT_KINDS) == set(IncidentKind)
    for kind, rule in DEFAULT_KINDS.items():
        if rule.violent:
            assert UnitKind.volunteer not in rule.unit_kinds, kind
    violent = {k for k, r in DEFAULT_KINDS.items() if r.violent}
    assert violent == {IncidentKind.assault, IncidentKind.robbery, IncidentKind.fight, IncidentKind.weapon}


def test_unknown_key_is_reported_with_its_line_and_a_suggestion(tmp_path):
    text = BASE.replace("    stream: rtsp://", "    stram: rtsp://")
    issues = issues_of(tmp_path, text)
    typo = only(issues, "cameras[0].stram")
    assert typo.reason == "unknown field 'stram'; did you mean 'stream'?"
    assert typo.line == line_of(text, "stram:")
    missing = only(issues, "cameras[0].stream")
    assert missing.reason == "required field is missing"
    assert missing.line == line_of(text, "- id: cam01")


def test_wrong_type_is_reported_with_its_line(tmp_path):
    text = BASE + "policy:\n  max_attempts: many\n"
    i = only(issues_of(tmp_path, text), "policy.max_attempts")
    assert i.line == line_of(text, "max_attempts")
    assert "integer" in i.reason and "'many'" in i.reason


def test_duplicate_ids_name_both_positions(tmp_path):
    text = BASE.replace("id: a01", "id: p01")
    i = only(issues_of(tmp_path, text), "units[1].id")
    first, second = line_of(text, "id: p01"), line_of(text, "id: p01", 1)
    assert i.line == second
    assert i.reason == f"unit id 'p01' is used twice: units[0].id (line {first}) and units[1].id (line {second})"


def test_duplicate_yaml_key_is_reported(tmp_path):
    text = BASE.replace("name: Testville\n", "name: Testville\nname: Again\n")
    i = only(issues_of(tmp_path, text), "name")
    assert i.line == 2 and "written twice (lines 1 and 2)" in i.reason


def test_ids_must_be_subject_tokens(tmp_path):
    text = BASE.replace("id: cam01", "id: cam.01")
    i = only(issues_of(tmp_path, text), "cameras[0].id")
    assert "cannot be a subject token" in i.reason


def test_camera_outside_district_is_reported(tmp_path):
    text = BASE.replace("position: {lat: 30.2, lon: 114.905}", "position: {lat: 30.3, lon: 114.905}")
    i = only(issues_of(tmp_path, text), "cameras[0].position")
    assert "camera 'cam01'" in i.reason and "outside the district" in i.reason
    assert i.line == line_of(text, "lat: 30.3")


def test_camera_outside_is_still_reported_when_other_parts_are_broken(tmp_path):
    text = BASE.replace("position: {lat: 30.2, lon: 114.905}", "position: {lat: 30.3, lon: 114.905}")
    text = text.replace("kind: police, mode: car", "kind: police, mode: rocket")
    fields = {i.field for i in issues_of(tmp_path, text)}
    assert fields == {"cameras[0].position", "units[0].mode"}


def test_unknown_timezone_is_refused(tmp_path):
    i = only(issues_of(tmp_path, BASE.replace("Asia/Shanghai", "Asia/Wuhan")), "timezone")
    assert i.reason == "unknown time zone 'Asia/Wuhan' (use an IANA name such as Asia/Shanghai)"


@pytest.mark.parametrize(
    "stream", ["rtsp://10.0.0.5:554/live", "rtsps://cam/1", "http://x/mjpg", "https://x/hls.m3u8", "videos/gate.mp4", "/srv/v.mp4", "device:0"]
)
def test_camera_stream_accepts_urls_files_and_devices(stream):
    cam = Camera(id="c", name="c", community="x", position=Point(lat=0, lon=0), stream=stream)
    assert cam.stream == stream


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        ("rtmp://x/live", "scheme 'rtmp' is not supported"),
        ("device:front", "device:N needs a device number"),
        ("rtsp://", "names no host"),
        ("", "stream is empty"),
        ("cam:1", "neither a URL, a file path nor device:N"),
    ],
)
def test_camera_stream_refuses_other_schemes(stream, reason):
    with pytest.raises(ValidationError, match=reason):
        Camera(id="c", name="c", community="x", position=Point(lat=0, lon=0), stream=stream)


def test_district_built_in_code_checks_references_too():
    east = Community(id="east", name="East", boundary=((30.19, 114.90), (30.19, 114.91), (30.21, 114.91)))
    unit = Unit(id="u", callsign="U", kind=UnitKind.police, mode=TravelMode.car, beat="north", talkgroup="police")
    with pytest.raises(ValidationError, match="units\\[0\\].beat: unit 'u' names community 'north'"):
        District(name="x", timezone="UTC", center=Point(lat=30.2, lon=114.905), communities=(east,), units=(unit,))
    d = District(name="x", timezone="UTC", center=Point(lat=30.2, lon=114.905), communities=(east,), units=(unit.model_copy(update={"beat": "east"}),))
    assert d.source is None and d.unit("u").home == east.centroid


def test_streets_in_code_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "s.geojson").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert Streets(file="s.geojson").path() == tmp_path / "s.geojson"
    with pytest.raises(ValidationError, match="does not exist"):
        Streets(file="other.geojson")


def test_x_keys_hold_yaml_anchors_and_are_ignored(tmp_path):
    text = "x-zones:\n  gate: &gate {name: gate, polygon: [[0, 0], [1, 0], [1, 1]]}\n" + BASE.replace(
        "      - name: gate\n        polygon: [[0.2, 0.5], [0.8, 0.5], [0.8, 1.0], [0.2, 1.0]]\n        restricted: true\n",
        "      - *gate\n",
    )
    d = load_district(write(tmp_path, text))
    assert d.camera("cam01").zones[0].polygon == ((0, 0), (1, 0), (1, 1))


# --------------------------------------------------------------------------- the Tieshan sample


@pytest.fixture(scope="module")
def tieshan() -> District:
    return load_district(SAMPLE)


def test_sample_district_loads_with_fourteen_communities_and_sixteen_cameras(tieshan):
    assert check_config(SAMPLE) == []
    assert tieshan.name == "Tieshan" and tieshan.timezone == "Asia/Shanghai"
    assert len(tieshan.communities) == 14
    assert len(tieshan.cameras) == 16
    assert tieshan.contains(tieshan.center.lat, tieshan.center.lon)


def test_sample_has_16_police_28_auxiliaries_and_14_volunteer_teams(tieshan):
    by_kind = {k: [u for u in tieshan.units if u.kind is k] for k in UnitKind}
    assert {k: len(v) for k, v in by_kind.items()} == {UnitKind.police: 16, UnitKind.auxiliary: 28, UnitKind.volunteer: 14}
    assert {u.mode for u in by_kind[UnitKind.police]} == {TravelMode.car, TravelMode.motorbike}
    assert {u.mode for u in by_kind[UnitKind.auxiliary]} == {TravelMode.foot, TravelMode.bicycle, TravelMode.motorbike}
    assert {u.mode for u in by_kind[UnitKind.volunteer]} == {TravelMode.foot}
    assert {u.talkgroup for u in by_kind[UnitKind.police]} == {"police"}
    assert {u.talkgroup for u in by_kind[UnitKind.auxiliary]} == {"auxiliary"}
    assert {u.talkgroup for u in by_kind[UnitKind.volunteer]} == {"volunteers"}
    # one volunteer team per community, every community has police and auxiliaries
    assert sorted(u.beat for u in by_kind[UnitKind.volunteer]) == sorted(c.id for c in tieshan.communities)
    for c in tieshan.communities:
        assert any(u.beat == c.id for u in by_kind[UnitKind.police])
        assert sum(u.beat == c.id for u in by_kind[UnitKind.auxiliary]) == 2
    assert len({u.callsign for u in tieshan.units}) == 58


def test_sample_communities_tile_the_district_without_overlap(tieshan):
    s, w, n, e = tieshan.bbox
    total = sum(c.area_m2 for c in tieshan.communities)
    bbox_area = (n - s) * 111_195 * (e - w) * 111_195 * math.cos(math.radians((s + n) / 2))
    assert total == pytest.approx(bbox_area, rel=0.01)
    assert 3.3e3 < (e - w) * 111_195 * math.cos(math.radians(30.2)) < 3.7e3
    assert 2.3e3 < (n - s) * 111_195 < 2.7e3
    rng = random.Random(7)
    for _ in range(500):
        lat, lon = rng.uniform(s + 1e-5, n - 1e-5), rng.uniform(w + 1e-5, e - 1e-5)
        assert sum(c.contains(lat, lon) for c in tieshan.communities) <= 1


def _distance_to_boundary_m(c: Community, lat: float, lon: float) -> float:
    k = math.cos(math.radians(lat)) * 111_195
    pts = [((q - lon) * k, (p - lat) * 111_195) for p, q in c.boundary]
    best = math.inf
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        dx, dy = x2 - x1, y2 - y1
        t = max(0.0, min(1.0, -(x1 * dx + y1 * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(x1 + t * dx, y1 + t * dy))
    return best


def test_sample_cameras_watch_the_entrances_of_two_communities_eight_each(tieshan):
    per = {}
    for cam in tieshan.cameras:
        per.setdefault(cam.community, []).append(cam)
        comm = tieshan.community(cam.community)
        assert comm.contains(cam.position.lat, cam.position.lon), cam.id
        assert _distance_to_boundary_m(comm, cam.position.lat, cam.position.lon) < 20, cam.id
        assert cam.stream == f"rtsp://127.0.0.1:8554/{cam.id}"
        assert cam.zone("gate") is not None and cam.zone("gate").restricted
    assert sorted(len(v) for v in per.values()) == [8, 8]
    assert set(per) == {"gongren-xincun", "chenjiawan"}


@pytest.fixture(scope="module")
def graph(tieshan):
    return tieshan.load_streets()


def test_sample_unit_homes_are_on_a_street_of_their_beat(tieshan, graph):
    for u in tieshan.units:
        node, dist = graph.nearest_node(u.home.lat, u.home.lon, u.mode.value)
        assert dist < 1.0, (u.id, dist)
        assert tieshan.community(u.beat).contains(u.home.lat, u.home.lon), u.id


def test_sample_cameras_stand_on_streets(tieshan, graph):
    for cam in tieshan.cameras:
        # on a street segment, not necessarily at a node: within half a block of a node
        _, dist = graph.nearest_node(cam.position.lat, cam.position.lon)
        assert dist < 100, cam.id


def _rail(doc: dict) -> list[tuple[float, float]]:
    (rail,) = [f for f in doc["features"] if f["properties"].get("railway") == "rail"]
    return [(lat, lon) for lon, lat in rail["geometry"]["coordinates"]]


def _rail_side(rail: list[tuple[float, float]], lat: float, lon: float) -> int:
    for (la1, lo1), (la2, lo2) in zip(rail, rail[1:]):
        if lo1 <= lon <= lo2:
            y = la1 + (la2 - la1) * (lon - lo1) / (lo2 - lo1)
            d = (lat - y) * 111_195
            return 0 if abs(d) < 1.0 else (1 if d > 0 else -1)
    raise AssertionError("railway does not span the district")


def test_sample_railway_is_crossed_only_at_its_three_crossings(graph):
    doc = json.loads(SAMPLE_STREETS.read_text())
    rail = _rail(doc)
    s, w, n, e = graph.bounds
    assert rail[0][1] < w and rail[-1][1] > e  # it crosses the whole district
    places = {}
    for mode in ("foot", "car"):
        spots = set()
        for u, v, _ in graph.edges(mode):
            (la, lo), (lb, lob) = graph.coords(u), graph.coords(v)
            su, sv = _rail_side(rail, la, lo), _rail_side(rail, lb, lob)
            if su != sv:  # opposite sides, or one end on the railway (a level crossing)
                spots.add(round((lo + lob) / 2, 2))  # ~1 km buckets are plenty: crossings are far apart
        places[mode] = spots
    assert len(places["foot"]) == 3
    assert len(places["car"]) == 2  # the third is a pedestrian underpass
    level = [f for f in doc["features"] if f["properties"].get("railway") == "level_crossing"]
    assert len(level) == 1


def test_sample_has_a_lake_a_hill_one_way_streets_footways_and_named_streets():
    doc = json.loads(SAMPLE_STREETS.read_text())
    props = [f["properties"] for f in doc["features"]]
    assert any(p.get("natural") == "water" for p in props)
    assert any(p.get("natural") == "hill" for p in props)
    streets = [p for p in props if "highway" in p]
    assert sum(p.get("oneway") == "yes" for p in streets) >= 3
    assert sum(p["highway"] in ("footway", "pedestrian", "path") for p in streets) >= 10
    assert {"primary", "secondary", "residential"} <= {p["highway"] for p in streets}
    assert any(p.get("name") == "Tieshan Lu" and p["highway"] == "primary" for p in streets)


def test_sample_straight_line_nearest_unit_is_often_not_the_road_nearest(tieshan, graph):
    """The claim the street graph exists for: > 10% of incidents would go to the wrong unit by straight line."""
    from dispatch.streets import haversine_m

    rng = random.Random(11)
    s, w, n, e = tieshan.bbox
    homes = {u.id: (u.home.lat, u.home.lon, graph.nearest_node(u.home.lat, u.home.lon, "foot")[0]) for u in tieshan.units}
    differs = total = 0
    while total < 150:
        lat, lon = rng.uniform(s, n), rng.uniform(w, e)
        node, snap = graph.nearest_node(lat, lon, "foot")
        if snap > 60:  # in the lake or on the hill
            continue
        total += 1
        search = graph.search("foot", node)
        straight = min(homes, key=lambda u: haversine_m(lat, lon, homes[u][0], homes[u][1]))
        walk = {u: search.time_from(h[2]) for u, h in homes.items()}
        road = min((u for u in walk if walk[u] is not None), key=walk.get)
        differs += road != straight
    assert differs / total > 0.10


def test_sample_policy_block_spells_out_the_defaults(tieshan):
    raw = yaml.safe_load(SAMPLE.read_text())
    assert set(raw["policy"]) == set(Policy.model_fields)
    assert set(raw["policy"]["kinds"]) == {k.value for k in IncidentKind}
    assert tieshan.policy == Policy()


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_tieshan", ROOT / "tools" / "gen_tieshan.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generator_reproduces_the_committed_files(tmp_path):
    gen = _load_generator()
    assert gen.main(["--out", str(tmp_path), "--no-check"]) == 0
    assert (tmp_path / "tieshan-streets.geojson").read_bytes() == SAMPLE_STREETS.read_bytes()

    def body(p: Path) -> list[str]:  # the header comment carries the barrier figures of a full run
        return [line for line in p.read_text().splitlines() if not line.startswith("#")]

    assert body(tmp_path / "tieshan.yaml") == body(SAMPLE)
