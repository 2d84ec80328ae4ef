"""The latency benchmark's matching of intrusion alerts to scripted gate entries (bench.camera.credit_alerts)."""

from __future__ import annotations

from bench.camera import credit_alerts

FPS = 15.0


def _truth(frames: int, actors: list[dict]) -> list[dict]:
    return [{"frame": k, "t": k / FPS, "actors": actors} for k in range(frames)]


def _person(pid: str, box: list[int]) -> dict:
    return {"id": pid, "kind": "person", "box": box}


ENTRIES = [{"kind": "intrusion", "ids": ["in1"], "start": 1.0, "end": 6.0}, {"kind": "intrusion", "ids": ["p11"], "start": 1.2, "end": 6.0}]


def test_two_people_meeting_in_the_gate_are_credited_one_alert_each() -> None:
    # in1 at x 100-130, p11 right beside at 118-148: the second alert's box lies between them and
    # overlaps in1 a little more, yet in1 already has the first alert
    truth = _truth(60, [_person("in1", [100, 100, 130, 180]), _person("p11", [118, 100, 148, 180])])
    news = [(10.0, 5.0, 1.4, [100, 100, 130, 180]), (10.3, 5.3, 1.6, [108, 100, 138, 180])]
    credited, unmatched = credit_alerts(news, truth, ENTRIES, FPS)
    assert unmatched == 0
    assert credited == {("in1", 1.0): (10.0, 5.0), ("p11", 1.2): (10.3, 5.3)}


def test_a_repeat_alert_for_one_person_does_not_credit_somebody_it_does_not_overlap() -> None:
    truth = _truth(60, [_person("in1", [100, 100, 130, 180]), _person("p11", [300, 100, 330, 180])])
    news = [(10.0, 5.0, 1.4, [100, 100, 130, 180]), (10.3, 5.3, 1.6, [101, 100, 131, 180])]
    credited, unmatched = credit_alerts(news, truth, ENTRIES, FPS)
    assert unmatched == 0
    assert credited == {("in1", 1.0): (10.0, 5.0)}, "p11's entry stays missed: no alert boxed them"


def test_an_alert_boxing_nobody_or_before_the_clip_is_unmatched() -> None:
    truth = _truth(60, [_person("in1", [100, 100, 130, 180])])
    news = [(10.0, 5.0, 1.4, [400, 10, 430, 90]), (10.1, 1.0, -3.0, [100, 100, 130, 180]), (10.2, 5.1, 1.5, None)]
    credited, unmatched = credit_alerts(news, truth, ENTRIES, FPS)
    assert credited == {} and unmatched == 3


def test_an_alert_for_a_person_with_no_entry_begun_is_unmatched() -> None:
    truth = _truth(60, [_person("in1", [100, 100, 130, 180])])
    news = [(10.0, 5.0, 0.2, [100, 100, 130, 180])]  # in1's entry starts at 1.0, more than 0.5 s later
    credited, unmatched = credit_alerts(news, truth, ENTRIES, FPS)
    assert credited == {} and unmatched == 1
