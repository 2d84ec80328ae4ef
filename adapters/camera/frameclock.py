"""Capture times for live frames that carry no timestamp we can read (MJPEG over HTTP, RTSP, devices).

    clock = FrameClock(native_fps)              # None: learn the frame period from the stream
    t = clock.stamp(now=time.time(), read_s=seconds the read() call took)

A frame's wall time on arrival is its capture time only when the reader was waiting for it. When
the reader is held up (a loaded machine: the worst night is also the busiest), the frames the
camera sent meanwhile queue up in the socket or the driver, and the next reads return them at once.
Stamped with the time they were read, half a second of video lands in a few milliseconds, and
everything measured per second goes wrong: a walker's speed doubles (a false `running` alert), a
tracked person seems to jump (a second intrusion event for them). Measured on the rendered busy clip
with the reader stalled for 0.4-0.8 s every 2 s: 1-2 false running alerts and 2-8 extra intrusion
events per 30 s, none of either with this clock (docs/camera-adapter.md, "Frame times").

The rule: a frame whose read returned in under a third of the frame period was already waiting, so
it was captured one period after the frame before it (never later than now). A frame the reader had
to wait for is stamped now. The period is the camera's native rate when the stream says it (RTSP),
and is learned from the frames that were waited for in any case. A frame the camera or network
dropped arrives late, after a wait, so it is stamped when it came and does not squeeze the others.
Pure: no OpenCV, time passed in.
"""

from __future__ import annotations

__all__ = ["FrameClock"]


class FrameClock:
    MIN_PERIOD = 0.005  # 200 fps
    MAX_PERIOD = 2.0
    LEARN = 0.1  # weight of a new interval in the learned period

    def __init__(self, fps: float | None = None) -> None:
        self.period: float | None = None
        if fps is not None and fps > 0:
            self.period = min(self.MAX_PERIOD, max(self.MIN_PERIOD, 1.0 / fps))
        self._last_t: float | None = None  # the last stamp given
        self._last_arrival: float | None = None
        self.backdated = 0  # frames stamped earlier than they were read (they had queued)

    def stamp(self, now: float, read_s: float) -> float:
        """The capture time of a frame read at wall time `now` by a read() call that took `read_s` seconds."""
        last, arrival = self._last_t, self._last_arrival
        self._last_arrival = now
        p = self.period
        waited = read_s >= (p / 3.0 if p is not None else 0.015)
        if last is None:
            t = now
        elif waited or p is None:
            t = now
            if waited and arrival is not None:
                self._learn(now - arrival)
        else:
            t = min(now, last + p)
            if t < now:
                self.backdated += 1
        if last is not None and t <= last:
            t = last + 1e-4  # strictly increasing, whatever the wall clock did
        self._last_t = t
        return t

    def _learn(self, interval: float) -> None:
        if not self.MIN_PERIOD <= interval <= self.MAX_PERIOD:
            return
        self.period = interval if self.period is None else (1.0 - self.LEARN) * self.period + self.LEARN * interval
