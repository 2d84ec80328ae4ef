"""`FastHog` (adapters/camera/hogfast.py) against OpenCV's own HOG on rendered camera frames: the
detector swapped cv2.HOGDescriptor.detectMultiScale for it, so every box must be the same and
every score the same to float rounding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from adapters.camera.detectors import HogDetector
from adapters.camera.hogfast import FastHog, _resize
from simulators.scene import SCENARIOS

# HogDetector's searches: the small window's stride and the three scale steps it uses
STRIDE, PAD = (4, 2), (4, 4)


@pytest.fixture(autouse=True)
def _one_cv2_thread():
    """cv2's multi-threaded detectMultiScale appends boxes and their weights under two separate locks,
    so a weight can land on another level's box (seen 3 times in 464 runs): compare against its
    single-threaded result, as the camera workers and the benchmark run it."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="module")
def frames() -> list[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """A busy entrance (people at every size, a car) at a few moments, through JPEG like a camera's
    stream so the gradients carry compression noise, with the people's true boxes."""
    scene = SCENARIOS["busy"](3)
    out = []
    for t in (4.0, 7.5, 11.0):
        ok, jpg = cv2.imencode(".jpg", scene.render(t), [cv2.IMWRITE_JPEG_QUALITY, 80])
        assert ok
        people = [tuple(a["box"]) for a in scene.truth(t) if a["kind"] == "person"]
        out.append((cv2.imdecode(jpg, cv2.IMREAD_COLOR), people))
    return out


def _crops(frames, n: int, seed: int, person_px: float = 50.0) -> list[np.ndarray]:
    """Crops around people as the detector's searches make them: the box with a margin, scaled so
    the person is about `person_px` tall (give or take 20 %), a few left at the frame's scale (views
    into the frame, not copies)."""
    rng = np.random.default_rng(seed)
    out = []
    boxes = [(img, b) for img, people in frames for b in people]
    for i in range(n):
        img, (x1, y1, x2, y2) = boxes[int(rng.integers(len(boxes)))]
        h = y2 - y1
        my, mx = int(0.3 * h * rng.uniform(0.6, 1.4)), int(0.6 * h * rng.uniform(0.6, 1.4))
        crop = img[max(0, y1 - my):y2 + my, max(0, x1 - mx):x2 + mx]
        if i % 4:
            f = person_px / h * float(rng.uniform(0.8, 1.2))
            crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        if crop.shape[0] >= 66 and crop.shape[1] >= 34:
            out.append(crop)
    return out


def _boxes(rects, weights) -> list[tuple[tuple[int, ...], float]]:
    """(box, weight) pairs, sorted: duplicates count."""
    return sorted((tuple(int(v) for v in r), float(w)) for r, w in zip(np.asarray(rects).reshape(-1, 4), np.asarray(weights).reshape(-1)))


def _same(got, ref) -> bool:
    return [b for b, _ in got] == [b for b, _ in ref] and all(abs(g - r) < 1e-4 for (_, g), (_, r) in zip(got, ref))


@pytest.mark.parametrize("cell", [4, 8])
def test_fast_hog_scores_every_window_as_opencv_does(frames, cell):
    det = HogDetector(cell=cell)
    fast = FastHog(det.hog, cv2.HOGDescriptor_getDefaultPeopleDetector())
    stride = det.win_stride
    ww, wh = det.hog.winSize
    # at least a window (as the detector's crops): on a smaller image OpenCV scores a window that
    # runs past the padded image (C's integer division rounds the count of rows up to 1)
    crops = [c for c in _crops(frames, 16, seed=cell, person_px=50.0 if cell == 4 else 100.0) if c.shape[0] >= wh and c.shape[1] >= ww]
    assert len(crops) >= 8
    for crop in crops:
        pts, scores = fast.detect(crop, -1e9, stride, (cell, cell))
        ref_pts, ref_scores = det.hog.detect(crop, hitThreshold=-1e9, winStride=stride, padding=(cell, cell))
        ref = {tuple(p): s for p, s in zip(np.asarray(ref_pts).reshape(-1, 2).tolist(), np.asarray(ref_scores).reshape(-1))}
        got = {tuple(p): s for p, s in zip(pts.tolist(), scores.tolist())}
        assert got.keys() == ref.keys() and len(got) > 0
        assert max(abs(got[k] - ref[k]) for k in ref) < 1e-4


@pytest.mark.parametrize("cell, scale, nlevels", [(4, 1.05, 64), (4, 1.08, 64), (4, 1.1, 64), (4, 1.08, 3), (8, 1.05, 64)])
def test_fast_hog_finds_the_same_boxes_as_opencv_with_the_same_weights(frames, cell, scale, nlevels):
    det = HogDetector(cell=cell)
    levels_hog = det._hog_levels(nlevels)
    found = 0
    ww, wh = det.hog.winSize
    for crop in _crops(frames, 40, seed=int(scale * 100) + nlevels + cell, person_px=50.0 if cell == 4 else 100.0):
        if crop.shape[0] < wh or crop.shape[1] < ww:
            continue  # never searched (HogDetector._hog): cv2 would read past its buffer (a crash seen here)
        got = _boxes(*det._fast.detect_multiscale(crop, 0.0, det.win_stride, det.padding, scale, nlevels=nlevels))
        ref = _boxes(*levels_hog.detectMultiScale(crop, hitThreshold=0.0, winStride=det.win_stride, padding=det.padding, scale=scale))
        assert _same(got, ref), (crop.shape, got, ref)
        found += len(ref)
    assert found > 5, "the crops should hold people the detector finds"


def test_a_grey_image_gives_the_same_boxes_as_opencv(frames):
    det = HogDetector()
    grey = [cv2.cvtColor(c, cv2.COLOR_BGR2GRAY) for c in _crops(frames, 15, seed=9)]
    found = 0
    for crop in grey:
        got = _boxes(*det._fast.detect_multiscale(crop, 0.0, STRIDE, PAD, 1.05))
        ref = _boxes(*det.hog.detectMultiScale(crop, hitThreshold=0.0, winStride=STRIDE, padding=PAD, scale=1.05))
        assert _same(got, ref)
        found += len(ref)
    assert found > 0


def test_the_pyramid_resize_is_opencvs_linear_exact_bit_for_bit():
    rng = np.random.default_rng(5)
    for i in range(300):
        h, w = int(rng.integers(8, 160)), int(rng.integers(8, 160))
        src = rng.integers(0, 256, (h, w, 3 if i % 2 else 1), dtype=np.uint8)
        # pyramid steps, and exact halves (which OpenCV resizes by area: the same result)
        dw, dh = (w // 2, h // 2) if i % 7 == 0 else (max(1, round(w / 1.05 ** (1 + i % 9))), max(1, round(h / 1.05 ** (1 + i % 9))))
        ref = cv2.resize(src, (dw, dh), interpolation=cv2.INTER_LINEAR_EXACT).reshape(dh, dw, -1)
        assert np.array_equal(_resize(src, dw, dh), ref), (src.shape, dw, dh)


def test_the_detector_finds_the_same_people_with_either_engine(frames):
    fast, slow = HogDetector(), HogDetector(engine="opencv")
    found = 0
    for img, people in frames:
        regions = [(x1 - 4, y1 - 4, x2 + 4, y2 + 4) for x1, y1, x2, y2 in people]
        got, ref = fast.detect(img, regions), slow.detect(img, regions)
        # the same boxes; scores (rounded to 4 places) may differ in the last place
        assert [(d.label, d.box) for d in got] == [(d.label, d.box) for d in ref]
        assert all(abs(a.score - b.score) <= 1.5e-4 for a, b in zip(got, ref))
        found += len(got)
    assert found > 10


def test_an_unknown_hog_engine_is_refused_by_name():
    with pytest.raises(ValueError, match="'fast' or 'opencv'"):
        HogDetector(engine="gpu")


def test_building_the_search_compiles_every_kernel_a_detection_needs():
    """A camera's first person must not wait for the compiler (the grouping only runs when a window
    passes the threshold, so the warm-up makes every window pass)."""
    import adapters.camera.hogfast as hogfast

    HogDetector()
    assert hogfast._multiscale.signatures and hogfast._group.signatures


def test_an_image_the_search_cannot_read_is_refused_clearly():
    fast = HogDetector()._fast
    with pytest.raises(ValueError, match="8-bit grey or BGR"):
        fast.detect_multiscale(np.zeros((80, 40, 4), np.uint8))
    with pytest.raises(ValueError, match="8-bit grey or BGR"):
        fast.detect_multiscale(np.zeros((80, 40, 3), np.float32))
    frozen = np.zeros((80, 40, 3), np.uint8)
    frozen.flags.writeable = False  # a read-only frame is copied, not compiled for anew
    assert fast.detect_multiscale(frozen, 0.0, STRIDE, PAD) == ([], [])
