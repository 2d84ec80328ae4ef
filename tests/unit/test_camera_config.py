"""Camera settings in the district file: detect size, motion, zones with schedules, rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.district import check_config, parse_schedule, schedule_active

TIESHAN = Path(__file__).resolve().parents[2] / "config" / "districts" / "tieshan.yaml"


def test_schedules_cross_midnight_and_are_half_open():
    assert parse_schedule("22:00-06:00") == (1320, 360)
    assert schedule_active("22:00-06:00", 23 * 60) and schedule_active("22:00-06:00", 5 * 60 + 59)
    assert not schedule_active("22:00-06:00", 6 * 60) and not schedule_active("22:00-06:00", 12 * 60)
    assert schedule_active("08:00-18:00", 9 * 60) and not schedule_active("08:00-18:00", 18 * 60)
    assert schedule_active(None, 0)


@pytest.mark.parametrize("bad", ["22-06", "25:00-06:00", "10:00-10:00", "22:61-06:00"])
def test_malformed_schedule_is_refused_with_the_reason(bad):
    with pytest.raises(ValueError):
        parse_schedule(bad)


def _camera_yaml(tmp_path, extra: str) -> Path:
    text = TIESHAN.read_text()
    anchor = "\n  - id: cam01\n"
    assert anchor in text
    i = text.index(anchor) + len(anchor)
    # the first camera's remaining keys follow; insert ours right after its id line
    f = tmp_path / "district.yaml"
    f.write_text(text[:i] + extra + text[i:])
    (tmp_path / "tieshan-streets.geojson").symlink_to(TIESHAN.parent / "tieshan-streets.geojson")
    return f


def test_bad_camera_settings_are_reported_with_file_line_camera_and_field(tmp_path):
    f = _camera_yaml(
        tmp_path,
        "    detect: {width: 10, fps: 5}\n"
        "    motion: {masks: [[[0, 0], [1.5, 0], [1, 1]]]}\n",
    )
    issues = check_config(f)
    text = "\n".join(str(i) for i in issues)
    assert "district.yaml:209: cameras[0].detect.width" in text
    assert "district.yaml:210: cameras[0].motion.masks: mask 1 point 2 (1.5, 0) is outside the frame" in text


def test_a_rule_naming_a_zone_the_camera_lacks_is_refused(tmp_path):
    f = _camera_yaml(tmp_path, "    rules: {loitering: {seconds: 30, zones: [nowhere]}}\n")
    [issue] = check_config(f)
    assert issue.field.startswith("cameras[0]") and issue.line is not None
    assert "rules.loitering.zones names zone 'nowhere'" in issue.reason and "gate" in issue.reason
