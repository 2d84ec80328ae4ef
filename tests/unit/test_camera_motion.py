"""Motion detection on synthetic frames: blobs, masks, the global-change guard, drift, noise, tamper signals."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adapters.camera.motion import MotionDetector, merge_boxes, min_blob_fraction
from adapters.camera.rules import tamper_reason
from dispatch.district import Motion

W, H = 640, 360


def scene(seed: int = 1) -> np.ndarray:
    """A textured street: sky, a wall with windows, a road with kerbs."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), (95, 105, 110), np.uint8)
    img[: H // 3] = (160, 150, 130)
    cv2.rectangle(img, (180, 40), (460, 170), (70, 80, 120), -1)
    for x in range(200, 440, 50):
        cv2.rectangle(img, (x, 60), (x + 25, 100), (40, 40, 50), -1)
    for x in range(0, W, 32):
        cv2.line(img, (x, 250), (x + 16, 250), (220, 220, 220), 2)
    tex = rng.integers(-12, 12, (H, W, 1), dtype=np.int16)
    return np.clip(img.astype(np.int16) + tex, 0, 255).astype(np.uint8)


def with_person(img: np.ndarray, x: int, bottom: int = 320, h: int = 90) -> np.ndarray:
    out = img.copy()
    cv2.ellipse(out, (x, bottom - h + h // 8), (h // 10, h // 8), 0, 0, 360, (30, 50, 80), -1)
    cv2.rectangle(out, (x - h // 8, bottom - h + h // 4), (x + h // 8, bottom), (30, 40, 150), -1)
    return out


def noisy(img: np.ndarray, rng: np.random.Generator, sd: float = 4.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, sd, img.shape), 0, 255).astype(np.uint8)


def warm(md: MotionDetector, img: np.ndarray, n: int = 12, rng=None):
    res = None
    for _ in range(n):
        res = md.detect(noisy(img, rng) if rng is not None else img)
    return res


def test_min_blob_area_follows_sensitivity():
    assert min_blob_fraction(0.0) == pytest.approx(0.01)
    assert min_blob_fraction(0.5) == pytest.approx(0.001)
    assert min_blob_fraction(1.0) == pytest.approx(0.0001)


def test_a_walking_person_gives_one_box_around_them_in_detect_pixels():
    md = MotionDetector(Motion(), (W, H))
    bg = scene()
    warm(md, bg)
    for x in (200, 215, 230):
        m = md.detect(with_person(bg, x))
    assert len(m.boxes) == 1
    x1, y1, x2, y2 = m.boxes[0]
    assert x1 <= 230 - 11 and x2 >= 230 + 11 and y1 <= 320 - 85 and y2 >= 318
    assert (x2 - x1) < 120 and not m.recalibrated


def test_sensor_noise_and_slow_drift_give_no_motion():
    rng = np.random.default_rng(3)
    md = MotionDetector(Motion(), (W, H))
    bg = scene()
    warm(md, bg, rng=rng)
    boxes = []
    for i in range(300):  # 60 s at 5 fps, the light falling by 40 grey levels
        frame = np.clip(bg.astype(np.float32) * (1.0 - 0.4 * i / 300 * 0.5) , 0, 255).astype(np.uint8)
        m = md.detect(noisy(frame, rng, 6.0))
        boxes += m.boxes
        assert tamper_reason(m.tamper) is None
    assert boxes == []


def test_lights_switching_on_recalibrate_and_report_no_motion():
    md = MotionDetector(Motion(), (W, H))
    dark = (scene().astype(np.float32) * 0.35).astype(np.uint8)
    warm(md, dark)
    lit = scene()
    m = md.detect(lit)
    assert m.recalibrated and m.boxes == [] and m.changed > 0.35
    for _ in range(5):
        m = md.detect(lit)
        assert m.boxes == [] and not m.recalibrated
    assert tamper_reason(m.tamper) is None  # same scene, brighter: not tampering


def test_masks_hide_motion_inside_them():
    masked = Motion(masks=(((0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)),))
    md = MotionDetector(masked, (W, H))
    bg = scene()
    warm(md, bg)
    for x in (100, 115, 130):
        m = md.detect(with_person(bg, x))
    assert m.boxes == []
    for x in (500, 515, 530):
        m = md.detect(with_person(bg, x))
    assert len(m.boxes) == 1 and m.boxes[0][0] > W // 2


def test_a_small_blob_is_dropped_at_low_sensitivity_and_kept_at_high():
    bg = scene()
    for sens, expect in ((0.0, 0), (0.9, 1)):
        md = MotionDetector(Motion(sensitivity=sens), (W, H))
        warm(md, bg)
        for x in (300, 306, 312):
            img = bg.copy()
            cv2.circle(img, (x, 300), 7, (0, 0, 0), -1)
            m = md.detect(img)
        assert len(m.boxes) == expect, sens


def test_a_person_standing_still_is_not_absorbed_within_seconds():
    md = MotionDetector(Motion(), (W, H))
    bg = scene()
    warm(md, bg)
    for x in (200, 210, 220):
        md.detect(with_person(bg, x))
    still = with_person(bg, 220)
    for _ in range(15):  # 3 s at 5 fps
        m = md.detect(still)
    assert m.boxes, "the background learns moving pixels 10x slower"


def test_a_ghost_is_absorbed_when_asked_and_only_there():
    """Somebody in the first frame leaves a ghost where they stood; `absorb` takes that area into the
    background at once (the pipeline asks for areas that keep moving where the detector finds nobody)."""
    md = MotionDetector(Motion(), (W, H))
    bg = scene()
    md.detect(with_person(bg, 200))  # the background is learned with a person in it
    for _ in range(10):
        m = md.detect(with_person(bg, 450))  # they are now elsewhere; the old place stays a ghost
    ghost = [b for b in m.boxes if b[0] <= 200 <= b[2]]
    assert ghost and any(b[0] <= 450 <= b[2] for b in m.boxes)
    md.absorb(ghost)
    m = md.detect(with_person(bg, 450))
    assert not any(b[0] <= 200 <= b[2] for b in m.boxes)
    assert any(b[0] <= 450 <= b[2] for b in m.boxes), "the person elsewhere is still moving"


@pytest.mark.parametrize("model", ["average", "mog2"])
def test_both_background_models_find_the_person(model):
    md = MotionDetector(Motion(), (W, H), model=model)
    bg = scene()
    warm(md, bg, 20)
    for x in (200, 215, 230):
        m = md.detect(with_person(bg, x))
    assert len(m.boxes) >= 1


def test_tamper_signals_covered_blurred_turned_away():
    bg = scene()
    cases = {
        "covered": np.full_like(bg, 20),
        "blurred": cv2.GaussianBlur(bg, (0, 0), 8),
        "turned_away": np.ascontiguousarray(np.rot90(cv2.resize(bg, (H, W)), 1)[:, ::-1]),
    }
    for reason, frame in cases.items():
        md = MotionDetector(Motion(), (W, H))
        warm(md, bg, 15)
        m = md.detect(cv2.resize(frame, (W, H)))
        assert tamper_reason(m.tamper) == reason, (reason, m.tamper)


def test_merge_boxes_joins_touching_boxes_only():
    assert merge_boxes([(0, 0, 10, 10), (11, 0, 20, 10), (50, 50, 60, 60)], gap=2) == [(0, 0, 20, 10), (50, 50, 60, 60)]
