"""The event contract: every payload validated, versioned, described and documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from dispatch.events import PAYLOADS, Alert, AlertSource, Area, CapStatus, UnitPosition, describe_error
from dispatch.subjects import Subjects, check_token

REPO = Path(__file__).resolve().parents[2]


def test_every_payload_is_frozen_refuses_unknown_fields_and_describes_every_field():
    for name, model in PAYLOADS.items():
        assert model.model_config.get("frozen") and model.model_config.get("extra") == "forbid", name
        for field, info in model.model_fields.items():
            assert info.description, f"{name}.{field} has no description"


def test_a_message_of_another_schema_version_is_refused_with_a_clear_reason():
    with pytest.raises(ValidationError) as e:
        UnitPosition.model_validate_json(b'{"schema_version": 2, "unit": "p01", "lat": 30.2, "lon": 114.9}')
    assert "schema version 2 is not supported" in describe_error(e.value)


def test_times_must_carry_a_timezone_and_are_kept_in_utc():
    with pytest.raises(ValidationError):
        UnitPosition(unit="p01", lat=30.2, lon=114.9, time="2026-11-30T22:00:00")
    p = UnitPosition(unit="p01", lat=30.2, lon=114.9, time="2026-11-30T22:00:00+08:00")
    assert p.time.utcoffset().total_seconds() == 0 and p.time.hour == 14


def test_drill_alerts_must_say_exercise_in_both_places():
    with pytest.raises(ValidationError, match="Exercise"):
        Alert(event_id="e", source=AlertSource.operator, kind="theft", area=Area(lat=30.2, lon=114.9), exercise="d1")
    ok = Alert(event_id="e", source=AlertSource.operator, kind="theft", area=Area(lat=30.2, lon=114.9), exercise="d1", status=CapStatus.Exercise)
    assert ok.exercise == "d1"


def test_camera_alert_needs_its_camera_and_operator_alert_needs_a_place():
    with pytest.raises(ValidationError, match="camera id"):
        Alert(event_id="e", source=AlertSource.camera, kind="intrusion")
    with pytest.raises(ValidationError, match="area"):
        Alert(event_id="e", source=AlertSource.operator, kind="intrusion")


def test_every_subject_comes_from_one_place_and_a_prefix_separates_deployments():
    s, t = Subjects(), Subjects("site2")
    assert s.order("p01") == "radio.p01.order" and t.order("p01") == "site2.radio.p01.order"
    assert t.stream_alerts == "site2_ALERTS" and s.bucket_state == "state" and t.bucket_state == "site2_state"
    # units and incidents share the state bucket, told apart by their keys' first token
    assert s.unit_key("p01") == "unit.p01" and s.incident_key("i01") == "incident.i01"
    assert (s.unit_keys, s.incident_keys) == ("unit.>", "incident.>")
    assert t.strip(t.camera_alert("cam01")) == "alerts.camera.cam01"
    assert s.deadletter("alerts.camera.cam01") == "deadletter.alerts.camera.cam01"
    with pytest.raises(ValueError, match="subject token"):
        check_token("cam.01", "camera id")


def test_contract_document_is_up_to_date_with_the_models():
    res = subprocess.run([sys.executable, "tools/gen_contract_doc.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_drill_broadcasts_go_to_a_drill_talkgroup_that_real_radios_do_not_hear():
    s = Subjects()
    real, drill = s.talkgroup("police"), s.talkgroup("police", "night-drill-3")
    assert real == "radio.talkgroup.police"
    assert drill == "radio.talkgroup.police.drill.night-drill-3"
    # real radios subscribe to radio.talkgroup.* : one token after the prefix, so the drill subject never matches
    assert len(real.split(".")) == len(s.all_talkgroups.split(".")) != len(drill.split("."))
    assert drill.startswith("radio.")  # still recorded in the RADIO stream


def test_drill_ids_must_be_subject_tokens():
    with pytest.raises(ValidationError):
        UnitPosition(unit="p01", lat=30.2, lon=114.9, exercise="drill 3.x")
