"""Tracker identities where two people cross (adapters/camera/tracker.py), as pure tables: no video."""

from __future__ import annotations

from adapters.camera.tracker import Tracker, look_distance
from adapters.camera.types import Detection
from dispatch.district import Objects

RED = (0.1, 0.1, 0.8, 0.2, 0.2, 0.3)  # upper body B, G, R; legs B, G, R
BLUE = (0.8, 0.2, 0.1, 0.3, 0.2, 0.2)


def person(x: int) -> Detection:
    return Detection("person", 0.9, (x, 100, x + 40, 200))


def crossing(with_looks: bool) -> tuple[int, int, Tracker]:
    """A (red) walks right, B (blue) walks left; where they meet the detector finds only B, a little
    nearer to where A should be. Returns the ids of A's and B's tracks and the tracker."""
    tr = Tracker(Objects(), [], (640, 360))
    for k in range(4):  # side by side, apart: both found
        t = 0.2 * k
        tr.update([person(100 + 10 * k), person(200 - 10 * k)], t, looks=[RED, BLUE] if with_looks else None)
    ids = [s.id for s in tr.active]
    tr.update([person(148)], 0.8, looks=[BLUE] if with_looks else None)
    return ids[0], ids[1], tr


def test_looks_keep_the_detection_with_the_person_it_looks_like():
    a, b, tr = crossing(with_looks=True)
    seen = {s.id: s.misses for s in tr.active}
    assert seen[b] == 0 and seen[a] == 1, "B was found; A coasts"


def test_without_looks_the_nearer_track_takes_it():
    a, b, tr = crossing(with_looks=False)
    seen = {s.id: s.misses for s in tr.active}
    assert seen[a] == 0 and seen[b] == 1  # the identity swap that looks prevent


def test_look_distance_is_the_largest_channel_difference():
    assert look_distance(RED, RED) == 0.0
    assert abs(look_distance(RED, BLUE) - 0.7) < 1e-9


def test_a_carried_track_moves_to_its_blob_and_must_be_looked_at_again_in_time():
    """The pipeline follows a steady confirmed person by their motion blob (`carried`) for at most
    `max_rested` frames; the track moves there without a hit or a miss."""
    tr = Tracker(Objects(), [], (640, 360))
    for k in range(5):
        tr.update([person(100 + 10 * k)], 0.2 * k)
    (s,) = tr.active
    assert s.confirmed and tr.steady(2) == {s.id}
    tr.update([], 1.0, rest={s.id}, carried={s.id: (152, 101, 192, 201)})
    (c,) = tr.active
    assert c.box == (152, 101, 192, 201) and c.misses == 0
    assert tr.steady(2) == {s.id}
    tr.update([], 1.2, rest={s.id}, carried={s.id: (161, 101, 201, 201)})
    assert tr.steady(2) == set(), "two frames without the detector: it must look again"
    tr.update([person(170)], 1.4)
    assert tr.steady(2) == {s.id}


def test_a_track_that_jumps_onto_somebody_else_is_not_measured_as_a_sprint():
    """A walker at 0.25 body heights/s whose detection lands 0.8 body heights off (the detector found the
    person crossing next to them instead): speed is not measured across the jump, so no `running`."""
    tr = Tracker(Objects(), [], (640, 360))
    for k in range(6):
        tr.update([person(100 + 5 * k)], 0.2 * k)
    (s,) = tr.active
    walking = s.speed
    assert 0.1 < walking < 0.5
    tr.update([person(215)], 1.2)  # 80 px = 0.8 body heights off where the walker should be
    (j,) = tr.active
    assert j.id == s.id and j.misses == 0, "the same track took it"
    assert j.speed < 0.5, j.speed


def test_a_runner_keeps_its_speed_without_counting_as_a_jump():
    """A runner at 2.5 body heights/s (50 px a frame at 5 fps) is followed by its velocity: measured fast."""
    tr = Tracker(Objects(), [], (640, 360))
    for k in range(8):
        tr.update([person(50 + 50 * k)], 0.2 * k)
    (s,) = tr.active
    assert s.speed > 2.0, s.speed


def test_a_young_track_does_not_take_a_box_that_looks_like_its_settled_neighbour():
    """A (red) has walked for a while; B has just been found beside A. The detector then finds one box
    between the two, a little nearer to B, that looks like A: it is A's (a track whose look is not known
    yet must not win on that alone, or the two swap)."""
    tr = Tracker(Objects(), [], (640, 360))
    for k in range(4):
        tr.update([person(100 + 10 * k)], 0.2 * k, looks=[RED])
    [a] = [s.id for s in tr.active]
    tr.update([person(140), person(190)], 0.8, looks=[RED, BLUE])
    b = next(s.id for s in tr.active if s.id != a)
    # A's box is predicted at 150, B's at 190: the box at 174 is 24 px from A's and 16 px from B's
    tr.update([person(174)], 1.0, looks=[RED])
    seen = {s.id: s.misses for s in tr.active}
    assert seen[a] == 0 and seen[b] == 1, "A found, B coasts"
