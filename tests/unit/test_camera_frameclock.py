"""FrameClock: capture times for live frames, read in bursts after the reader was held up."""

from __future__ import annotations

import pytest

from adapters.camera.frameclock import FrameClock

P = 1 / 15  # a 15 fps camera


def _live(clock: FrameClock, captured: list[float], stalls: list[tuple[float, float]], decode_s: float = 0.003) -> list[float]:
    """Stamp frames captured at `captured` times read by a reader that is held up during each (start, end) of
    `stalls`: a frame captured while the reader waits is read when it comes (the read took the wait), one
    captured during a stall or while a backlog is read is read at once (decode_s)."""
    out = []
    free_at = 0.0  # when the reader calls read() next
    for c in captured:
        for s, e in stalls:
            if s <= free_at < e:
                free_at = e
        start = free_at
        now = max(c, start) + decode_s
        read_s = now - start
        out.append(clock.stamp(now, read_s))
        free_at = now + 0.0002
    return out


def test_frames_read_as_they_come_are_stamped_when_they_came() -> None:
    captured = [1000.0 + k * P for k in range(60)]
    ts = _live(FrameClock(), captured, [])
    assert ts == pytest.approx([c + 0.003 for c in captured], abs=1e-6)


def test_frames_queued_during_a_stall_get_their_capture_times_not_the_time_they_were_read() -> None:
    captured = [1000.0 + k * P for k in range(90)]
    stall = (1000.0 + 2.0, 1000.0 + 2.6)  # 0.6 s held up: 9 frames queue and are read in a burst
    clock = FrameClock()  # the period is learned from the first 2 s
    ts = _live(clock, captured, [stall])
    steps = [b - a for a, b in zip(ts, ts[1:])]
    # read times would put 9 frames within ~30 ms; the clock keeps every step near one frame period
    assert max(steps) < 1.5 * P and min(steps) > 0.5 * P
    assert ts == pytest.approx([c + 0.003 for c in captured], abs=0.01)
    assert clock.backdated >= 8


def test_the_native_rate_is_used_before_any_frame_was_waited_for() -> None:
    clock = FrameClock(fps=15)
    assert clock.stamp(100.0, 0.5) == 100.0  # the first frame: when it came
    # held up for 0.3 s, then three frames already waiting: one period apart, not 1 ms apart
    ts = [clock.stamp(100.3 + k * 0.001, 0.001) for k in range(3)]
    assert ts == pytest.approx([100.0 + P, 100.0 + 2 * P, 100.0 + 3 * P])
    assert clock.backdated == 3


def test_a_frame_the_camera_dropped_is_not_squeezed_into_one_period() -> None:
    captured = [1000.0 + k * P for k in range(30)] + [1000.0 + k * P for k in range(31, 60)]  # frame 30 lost
    ts = _live(FrameClock(), captured, [])
    assert ts[30] - ts[29] == pytest.approx(2 * P, abs=1e-3)


def test_stamps_never_run_ahead_of_the_wall_clock_and_always_increase() -> None:
    clock = FrameClock(fps=30)  # the stream claims 30 fps but sends 10: queued frames cap at now
    ts = [clock.stamp(50.0 + k * 0.1, 0.0005) for k in range(20)]
    assert all(t <= 50.0 + k * 0.1 + 1e-9 for k, t in enumerate(ts))
    assert all(b > a for a, b in zip(ts, ts[1:]))
    # the same instant twice (a coarse clock): still increasing
    assert clock.stamp(ts[-1], 0.1) > ts[-1]
