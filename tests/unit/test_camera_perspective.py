"""Where a person can stand and how tall they are there (adapters/camera/pipeline.py Perspective), as tables."""

from __future__ import annotations

from adapters.camera.pipeline import Perspective


def learned() -> Perspective:
    """A perspective already learned: a person whose feet are on row y is 0.5 y + 10 px tall; the highest
    feet were seen on row 100 of a 360-row frame."""
    p = Perspective(360)
    p.line, p.top_feet = (0.5, 10.0), 100.0
    return p


def test_a_blob_shorter_than_a_person_standing_there_is_searched_at_that_persons_size():
    # the legs of somebody whose torso melts into the background: rows 250-300, where a person is 160 px
    (band,) = learned().bands((40, 250, 80, 300))
    assert band == ((40, 140, 80, 300), 128.0, 160.0)


def test_a_blob_a_whole_person_tall_is_searched_band_by_band_from_its_feet():
    bands = learned().bands((40, 140, 80, 300))
    assert bands and bands[0][0][3] == 300 and bands[0][2] == 160.0
    assert all(lo <= hi <= 1.25 * lo + 1e-9 for _, lo, hi in bands)


def test_nobody_stands_above_the_highest_feet_seen_unless_asked_anywhere():
    p = learned()
    assert p.bands((40, 20, 80, 60)) == []  # row 60 < 100 - 0.08 * 360
    assert p.bands((40, 20, 80, 60), anywhere=True)


def test_nothing_is_said_before_a_line_is_learned():
    assert Perspective(360).bands((40, 250, 80, 300)) is None
