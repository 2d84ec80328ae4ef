"""What the pipeline asks the detector to search (`Pipeline._detect`), with a detector that records its
calls and finds the one person we script: no video, no HOG."""

from __future__ import annotations

import numpy as np

from adapters.camera.pipeline import Pipeline
from adapters.camera.types import Box, Detection
from district_fixtures import make_camera


class RecordingDetector:
    """Finds the person at `self.person` wherever it is asked to look; records the group searches and the
    guides it was told are lost."""

    name = "recording"

    def __init__(self, person: Box):
        self.person = person
        self.sized: list[list[tuple]] = []
        self.lost: list[list[Box]] = []

    def detect(self, image, regions):
        return [Detection("person", 0.95, self.person)]

    def detect_guided(self, image, regions, guides, sized=(), lost=()):
        self.sized.append(list(sized))
        self.lost.append(list(lost))
        return [Detection("person", 0.95, self.person)]


def person_at(x: int) -> Box:
    return (x, 150, x + 40, 250)


def test_a_blob_that_grows_past_the_tracked_person_is_searched_at_once():
    """A tracked person's blob suddenly holds more than them (somebody steps out from behind): the
    group search at the person's size runs in that frame, not at the next once-a-second tick; while the
    blob stays that wide it waits for the tick again."""
    cam = make_camera([], {})
    det = RecordingDetector(person_at(100))
    pipe = Pipeline(cam, detector=det, clock_minutes=lambda t: 0)
    image = np.zeros((360, 640, 3), np.uint8)
    t = 0.0
    # walk right until the track is confirmed and seen in the last frame (blob = the person, dilated)
    for k in range(8):
        det.person = person_at(100 + 12 * k)
        x = det.person[0]
        pipe._detect(image, [(x - 8, 140, x + 48, 262)], t)
        pipe.tracker.update([Detection("person", 0.95, det.person)], t)
        t += 0.2
    assert any(tr.confirmed for tr in pipe.tracker.active)
    every = int(round(pipe.fps * pipe.hot_every))

    def step(blob: Box) -> list[tuple]:
        nonlocal t
        det.person = (det.person[0] + 12, 150, det.person[2] + 12, 250)
        det.sized.clear()
        pipe._detect(image, [blob], t)
        pipe.tracker.update([Detection("person", 0.95, det.person)], t)
        t += 0.2
        return [s for call in det.sized for s in call]

    while (pipe._tick + 1) % every == 0 or (pipe._tick + 2) % every == 0:  # two frames off the tick
        step((det.person[0] + 4, 140, det.person[2] + 20, 262))
    x = det.person[0] + 12
    # wider than one person's blob (40 px + 0.3 of 100), still mostly over the track: somebody half out
    wide = (x - 8, 140, x + 72, 262)
    first = step(wide)
    assert len(first) == 1 and first[0][0] == wide, "searched in the frame it grew"
    assert abs(first[0][1] - 100) <= 2, "at the tracked person's height"
    x = det.person[0] + 12
    assert step((x - 8, 140, x + 72, 262)) == [], "still that wide in the next frame: waits for the tick"


def test_a_person_unfound_for_two_frames_is_passed_to_the_detector_as_lost():
    """The detector may search a lost person's own blob at any size (HogDetector._hidden): the pipeline
    names as lost the guides of people unfound for LOST_MISSES analysed frames, not after one miss."""
    from adapters.camera.pipeline import LOST_MISSES

    cam = make_camera([], {})
    det = RecordingDetector(person_at(100))
    pipe = Pipeline(cam, detector=det, clock_minutes=lambda t: 0)
    image = np.zeros((360, 640, 3), np.uint8)
    t = 0.0
    for k in range(8):  # walking right, found every frame: confirmed
        det.person = person_at(100 + 12 * k)
        pipe.tracker.update([Detection("person", 0.95, det.person)], t)
        t += 0.2
    lost_per_frame = []
    for _ in range(LOST_MISSES + 1):  # then the detector finds nobody
        x = det.person[0]
        det.lost.clear()
        pipe._detect(image, [(x - 8, 140, x + 48, 262)], t)
        pipe.tracker.update([], t)
        lost_per_frame.append([b for call in det.lost for b in call])
        t += 0.2
    assert all(not lost for lost in lost_per_frame[:LOST_MISSES]), lost_per_frame
    assert len(lost_per_frame[LOST_MISSES]) == 1, "unfound for LOST_MISSES frames: its guide is lost"
