"""Motion detection on a small grey frame: the cheap gate in front of the object detector.

    md = MotionDetector(camera.motion, (640, 360))    # settings, detect size (w, h)
    m = md.detect(image)                               # BGR at the detect size
    m.boxes          # motion blobs, detect-frame pixels
    m.tamper         # brightness, contrast, sharpness, similarity to the learned scene

The frame is shrunk to `scale` of the detect size (area averaging, which also
averages sensor noise away), turned grey and blurred, then compared with a
background model:

* background: a running average (cv2.accumulateWeighted), or MOG2 with
  `model="mog2"`. Measured on the rendered clips (docs/camera-adapter.md):
  the average costs 0.47 ms a frame against MOG2's 1.1-1.4 ms; MOG2 leaves
  swaying trees and flicker almost silent, but its blobs come out fragmented
  and people are absorbed sooner, and the detector's hit rate fell with it
  (walk 0.88, busy 0.74 against 0.94 / 0.87). So the average is the default,
  and the pipeline keeps areas that move all the time from costing detector
  time (its motion heat map). Moving pixels learn 10x slower, so a person
  standing still is not swallowed within seconds (the pipeline also keeps
  looking at tracked people without motion, as Frigate does).
* threshold: `Motion.threshold` grey levels; blobs smaller than the minimum
  area that `Motion.sensitivity` sets are dropped (0 = 1% of the frame,
  0.5 = 0.1%, 1 = 0.01%): sensor noise never survives the blur, the threshold
  and the area filter together.
* masks: relative polygons zeroed in the motion mask (trees, clocks, a road).
* global-change guard: when more than `Motion.global_change` of the (unmasked)
  frame changes at once -- lights switching on, a cloud, the camera's own
  exposure jump -- the background is reset to the current frame and the frame
  reports no motion.

Tamper signals are measured on every frame (`TamperSignals`): mean brightness,
contrast (grey std), sharpness (variance of the Laplacian on a 160-wide frame),
and similarity (zero-mean normalised cross-correlation, so indifferent to
gain and offset, i.e. to lights) between the frame and a long-term reference
view that the global-change guard does NOT reset. The rules (adapters.camera.rules)
decide from them: covered (dark or uniform), blurred (sharpness collapse) or
turned away (low similarity for long).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from adapters.camera.rules import TamperSignals
from adapters.camera.types import Box
from dispatch.district import Motion

__all__ = ["MotionDetector", "MotionResult", "TamperSignals", "min_blob_fraction"]


def min_blob_fraction(sensitivity: float) -> float:
    """Smallest motion blob, as a fraction of the frame area: 1% at 0, 0.1% at 0.5, 0.01% at 1."""
    s = min(max(float(sensitivity), 0.0), 1.0)
    return 10.0 ** (-2.0 - 2.0 * s)


@dataclass(frozen=True)
class MotionResult:
    boxes: list[Box]
    changed: float  # fraction of the unmasked frame that changed
    recalibrated: bool  # the global-change guard fired: background reset, no motion reported
    tamper: TamperSignals
    mask: np.ndarray | None = field(default=None, repr=False, compare=False)  # small binary motion mask (debug)


class MotionDetector:
    """Background-difference motion detection plus tamper signals; one per camera, not thread-safe."""

    def __init__(
        self,
        settings: Motion,
        size: tuple[int, int],
        *,
        scale: float = 0.5,
        alpha: float = 0.05,
        slow_alpha: float = 0.005,
        model: str = "average",
        keep_mask: bool = False,
    ):
        self.settings = settings
        self.size = (int(size[0]), int(size[1]))
        w, h = self.size
        self.small = (max(32, int(round(w * scale))), max(18, int(round(h * scale))))
        self.fx = w / self.small[0]
        self.fy = h / self.small[1]
        self.alpha = alpha
        self.slow_alpha = slow_alpha
        self.model = model
        self.keep_mask = keep_mask
        self.threshold = int(settings.threshold)
        self.sensitivity = float(settings.sensitivity)
        self._bg: np.ndarray | None = None
        self._blur: np.ndarray | None = None  # the last frame, small, grey, blurred (for `absorb`)
        self._mog_started = False
        self._mog = None
        if model == "mog2":
            self._mog = cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=max(4.0, self.threshold**2 / 16.0), detectShadows=False)
        elif model != "average":
            raise ValueError(f"unknown background model {model!r} (average, mog2)")
        sw, sh = self.small
        self._valid = np.full((sh, sw), 255, np.uint8)
        for poly in settings.masks:
            pts = np.array([[int(round(x * sw)), int(round(y * sh))] for x, y in poly], np.int32)
            cv2.fillPoly(self._valid, [pts], 0)
        self._valid_count = max(1, int(cv2.countNonZero(self._valid)))
        self._has_masks = bool(settings.masks)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._fg_prev: np.ndarray | None = None
        # tamper reference (not reset by the global-change guard)
        self._tiny = (64, 36)
        self._ref: np.ndarray | None = None
        self._contrast_ref = 0.0
        self._sharp_ref = 0.0
        self._frames = 0
        self._low_sim_frames = 0

    # ------------------------------------------------------------------ controls

    def set_sensitivity(self, sensitivity: float) -> None:
        self.sensitivity = min(max(float(sensitivity), 0.0), 1.0)

    def reset(self) -> None:
        self._bg = None
        self._blur = None
        self._mog_started = False
        self._fg_prev = None
        if self._mog is not None:
            self._mog = cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=max(4.0, self.threshold**2 / 16.0), detectShadows=False)

    @property
    def min_area(self) -> float:
        """Minimum blob area in small-frame pixels."""
        return min_blob_fraction(self.sensitivity) * self.small[0] * self.small[1]

    # ------------------------------------------------------------------ per frame

    def detect(self, image: np.ndarray) -> MotionResult:
        """Motion boxes (detect-frame pixels) and tamper signals of one detect-size BGR frame."""
        small = cv2.resize(image, self.small, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        tamper = self._tamper(grey)
        blur = cv2.GaussianBlur(grey, (5, 5), 0)
        self._blur = blur

        if self.model == "mog2":
            return self._detect_mog2(blur, tamper)

        if self._bg is None:
            self._bg = blur.astype(np.float32)
            return MotionResult([], 0.0, False, tamper)
        diff = cv2.absdiff(blur, cv2.convertScaleAbs(self._bg))
        _, fg = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        if self._has_masks:
            fg = cv2.bitwise_and(fg, self._valid)
        changed = cv2.countNonZero(fg) / self._valid_count
        if changed > self.settings.global_change:
            self._bg = blur.astype(np.float32)  # lights, cloud, exposure: start again from here
            self._fg_prev = None
            return MotionResult([], changed, True, tamper)
        # learn: background pixels at alpha, moving pixels 10x slower
        fg_d = cv2.dilate(fg, self._kernel, iterations=2)
        cv2.accumulateWeighted(blur, self._bg, self.alpha, mask=cv2.bitwise_not(fg_d))
        cv2.accumulateWeighted(blur, self._bg, self.slow_alpha, mask=fg_d)
        boxes = self._boxes(fg_d)
        return MotionResult(boxes, changed, False, tamper, fg_d if self.keep_mask else None)

    def absorb(self, boxes: Sequence[Box]) -> None:
        """Take these areas (detect-frame pixels) into the background as they look in the last frame.

        For ghosts: a place where something stood when the background was learned (the first frame,
        or the global-change guard's reset) differs from the background after it has gone, and as a
        "moving" area it would be learned 10x slower, for a minute. The pipeline calls this for
        areas that have kept moving while the detector found nobody there and no track is near."""
        if self._bg is None or self._blur is None or self.model != "average":
            return
        sh, sw = self._bg.shape[:2]
        for x1, y1, x2, y2 in boxes:
            a, b = max(0, int(x1 / self.fx)), max(0, int(y1 / self.fy))
            c, d = min(sw, int(np.ceil(x2 / self.fx))), min(sh, int(np.ceil(y2 / self.fy)))
            if c > a and d > b:
                self._bg[b:d, a:c] = self._blur[b:d, a:c]

    def _detect_mog2(self, blur: np.ndarray, tamper: TamperSignals) -> MotionResult:
        assert self._mog is not None
        first = not self._mog_started
        fg = self._mog.apply(blur, learningRate=1.0 if first else self.alpha)
        self._mog_started = True
        if first:
            return MotionResult([], 0.0, False, tamper)
        if self._has_masks:
            fg = cv2.bitwise_and(fg, self._valid)
        changed = cv2.countNonZero(fg) / self._valid_count
        if changed > self.settings.global_change:
            self._mog.apply(blur, learningRate=1.0)
            return MotionResult([], changed, True, tamper)
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, self._kernel)
        fg_d = cv2.dilate(fg, self._kernel, iterations=2)
        return MotionResult(self._boxes(fg_d), changed, False, tamper, fg_d if self.keep_mask else None)

    def _boxes(self, fg: np.ndarray) -> list[Box]:
        contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_area = self.min_area
        rects = []
        for c in contours:
            if cv2.contourArea(c) < min_area:
                continue
            x, y, w, h = cv2.boundingRect(c)
            rects.append((x, y, x + w, y + h))
        rects = merge_boxes(rects, gap=2, grow=2.0)
        W, H = self.size
        out = []
        for x1, y1, x2, y2 in rects:
            out.append(
                (
                    max(0, int(x1 * self.fx)),
                    max(0, int(y1 * self.fy)),
                    min(W, int(np.ceil(x2 * self.fx))),
                    min(H, int(np.ceil(y2 * self.fy))),
                )
            )
        out.sort()
        return out

    # ------------------------------------------------------------------ tamper

    def _tamper(self, grey: np.ndarray) -> TamperSignals:
        tiny_w = 160
        tiny_h = max(9, int(round(grey.shape[0] * tiny_w / grey.shape[1])))
        g160 = cv2.resize(grey, (tiny_w, tiny_h), interpolation=cv2.INTER_AREA) if grey.shape[1] > tiny_w else grey
        mean, std = cv2.meanStdDev(g160)
        brightness, contrast = float(mean[0, 0]), float(std[0, 0])
        lap = cv2.Laplacian(g160, cv2.CV_16S, ksize=3)
        _, lstd = cv2.meanStdDev(lap)
        sharpness = float(lstd[0, 0]) ** 2
        tiny = cv2.resize(g160, self._tiny, interpolation=cv2.INTER_AREA).astype(np.float32)
        self._frames += 1
        if self._ref is None:
            self._ref = tiny
            self._contrast_ref = contrast
            self._sharp_ref = sharpness
            return TamperSignals(brightness, contrast, sharpness, 1.0, contrast, sharpness, True)
        similarity = _ncc(tiny, self._ref)
        learning = self._frames < 10
        suspect = similarity < 0.6 or contrast < 0.5 * self._contrast_ref or sharpness < 0.35 * self._sharp_ref
        if learning or not suspect:
            self._low_sim_frames = 0
            a = 0.2 if learning else 0.01
            cv2.accumulateWeighted(tiny, self._ref, a)
            self._contrast_ref += a * (contrast - self._contrast_ref)
            self._sharp_ref += a * (sharpness - self._sharp_ref)
        else:
            # a view that stays different for very long becomes the new normal (re-aimed camera);
            # about 10 minutes at 5 fps
            self._low_sim_frames += 1
            if self._low_sim_frames > 3000:
                self._ref = tiny
                self._contrast_ref = contrast
                self._sharp_ref = sharpness
                self._low_sim_frames = 0
        return TamperSignals(brightness, contrast, sharpness, similarity, self._contrast_ref, self._sharp_ref, learning)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - float(a.mean())
    b = b - float(b.mean())
    na = float(np.sqrt((a * a).sum()))
    nb = float(np.sqrt((b * b).sum()))
    if na < 1e-3 or nb < 1e-3:
        return 1.0 if na < 1e-3 and nb < 1e-3 else 0.0
    return float((a * b).sum() / (na * nb))


def merge_nested(boxes: Sequence[Box], frac: float = 0.6) -> list[Box]:
    """Fold a box into another when most of it (`frac` of its area) lies inside that one.

    Blobs that merely touch stay apart: unions chain across a busy frame into one
    frame-sized region that costs the detector far more than the parts."""
    out = sorted((tuple(b) for b in boxes), key=lambda b: -((b[2] - b[0]) * (b[3] - b[1])))
    keep: list[tuple[int, int, int, int]] = []
    for b in out:
        area = max(1, (b[2] - b[0]) * (b[3] - b[1]))
        for i, k in enumerate(keep):
            ix = min(b[2], k[2]) - max(b[0], k[0])
            iy = min(b[3], k[3]) - max(b[1], k[1])
            if ix > 0 and iy > 0 and ix * iy >= frac * area:
                keep[i] = (min(b[0], k[0]), min(b[1], k[1]), max(b[2], k[2]), max(b[3], k[3]))
                break
        else:
            keep.append(b)  # type: ignore[arg-type]
    return [tuple(int(v) for v in b) for b in keep]  # type: ignore[misc]


def merge_boxes(boxes: Sequence[Box], gap: int = 0, grow: float | None = None) -> list[Box]:
    """Union boxes that overlap or lie within `gap` pixels of each other, until none do.

    With `grow`, only when the union is at most `grow` times the two areas together: the
    pieces of one person join, but a busy frame does not chain into one frame-sized box."""
    out = [tuple(b) for b in boxes]
    changed = True
    while changed and len(out) > 1:
        changed = False
        res: list[tuple[int, int, int, int]] = []
        for b in out:
            for i, r in enumerate(res):
                if b[0] <= r[2] + gap and r[0] <= b[2] + gap and b[1] <= r[3] + gap and r[1] <= b[3] + gap:
                    u = (min(b[0], r[0]), min(b[1], r[1]), max(b[2], r[2]), max(b[3], r[3]))
                    if grow is not None:
                        au = (u[2] - u[0]) * (u[3] - u[1])
                        if au > grow * ((b[2] - b[0]) * (b[3] - b[1]) + (r[2] - r[0]) * (r[3] - r[1])):
                            continue
                    res[i] = u
                    changed = True
                    break
            else:
                res.append(b)  # type: ignore[arg-type]
        out = res
    return [tuple(int(v) for v in b) for b in out]  # type: ignore[misc]
