"""Which motion blobs `HogDetector.detect_guided` leaves to the guides around tracked people, and which
it searches on their own (`HogDetector._hidden`): pure geometry, no video."""

from __future__ import annotations

from adapters.camera.detectors import HogDetector

CROP = (80, 40, 200, 260)  # a guide's crop around its person
GUIDE = (120, 100, 160, 200)  # the track's predicted box
BLOB = (110, 90, 170, 215)  # the person's motion blob, inside the crop


def test_a_blob_inside_a_crop_whose_guide_found_somebody_is_not_searched_again():
    assert HogDetector._hidden(BLOB, [CROP], [], [GUIDE])


def test_a_lost_persons_own_blob_is_searched_at_any_size_when_their_guide_finds_nobody():
    """The guide searches only sizes near the track's; a track lost for a while may have the wrong size
    (the walk clip's walker: a box 17 % too tall, unfound for 1.6 s while HOG scored his blob 0.7-0.96)."""
    assert not HogDetector._hidden(BLOB, [], [(CROP, GUIDE)], [GUIDE])


def test_a_blob_shared_with_another_tracked_person_stays_with_the_guides():
    other = (150, 100, 190, 200)
    assert HogDetector._hidden(BLOB, [], [(CROP, GUIDE)], [GUIDE, other])
