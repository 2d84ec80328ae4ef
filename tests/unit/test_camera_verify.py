"""HogDetector.verify_at: a tracked person checked where the tracker predicts them, on rendered frames."""

from __future__ import annotations

import pytest

from adapters.camera.detectors import HogDetector, iou
from simulators.scene import Scene


@pytest.fixture(scope="module")
def frame():
    """A person walking along the pavement, fully in view, and their drawn box (the renderer's truth)."""
    sc = Scene(seed=3)
    sc.add_person([(-0.08, 0.80), (1.08, 0.80)], start=0.0)
    sc.length = 12.0
    for t in (4.0, 4.5, 5.0, 5.5, 6.0):
        people = [a for a in sc.truth(t) if a["kind"] == "person" and a["fully_in_view"]]
        if people:
            return sc.render(t), tuple(people[0]["box"])
    pytest.skip("the person is never fully in view")


def test_verify_finds_the_person_at_the_predicted_box(frame):
    image, box = frame
    det = HogDetector().verify_at(image, box)
    assert det is not None and det.label == "person"
    assert iou(det.box, box) >= 0.5, (det.box, box)


def test_a_prediction_a_little_off_snaps_back_to_the_person(frame):
    image, box = frame
    h = box[3] - box[1]
    off = (box[0] + int(0.1 * h), box[1] + int(0.05 * h), box[2] + int(0.1 * h), box[3] + int(0.05 * h))
    det = HogDetector().verify_at(image, off)
    assert det is not None and iou(det.box, box) > iou(off, box), (det, off, box)


def test_nobody_is_found_where_nobody_is(frame):
    image, box = frame
    w = box[2] - box[0]
    # the same size one and a half widths to the side, and far off on the other side of the frame
    for dx in (int(-2.5 * w), 320 if box[0] < 320 else -320):
        empty = (box[0] + dx, box[1], box[2] + dx, box[3])
        if empty[0] < 0 or empty[2] > image.shape[1]:
            continue
        assert HogDetector().verify_at(image, empty) is None, empty


def test_a_box_mostly_outside_the_frame_is_left_to_the_search(frame):
    image, box = frame
    w = box[2] - box[0]
    assert HogDetector().verify_at(image, (-w // 2 - 2, box[1], w // 2 - 2, box[3])) is None
