"""One child process per camera: capture, analysis and a watchdog, isolated from every other camera.

A crafted file or a broken stream can abort the process inside FFmpeg's
decoder; a camera's decoding and analysis therefore live in a child process of
their own (multiprocessing, *spawn* context: a fresh interpreter, no inherited
threads or locks), and the adapter (adapters/camera/runner.py) restarts a
child that died. Inside the child:

* a **capture thread** opens the source and reads frames into a bounded queue
  of 2; when the consumer is slow the oldest frame is dropped and counted, so
  capture never waits for analysis. A failed open or read closes the source
  and reconnects with exponential backoff (`backoff_initial_s` doubling up to
  `backoff_max_s`, reset once frames flow again).
* the **analysis loop** (the main thread) runs the Pipeline on each frame and
  sends its AlertEvents, snapshot bytes included, to the parent; runtime
  controls (detection on/off, sensitivity) are applied between frames.
* a **watchdog thread** measures the capture rate, decides the health (online,
  degraded with the measured fps, offline with the reason) and reports it with
  the counters every `report_interval_s`. A capture call that has not returned
  after `stuck_s` (a decoder or a socket that ignores its timeout) cannot be
  interrupted from Python: the watchdog reports it and ends the process, and
  the parent starts a fresh one.

Messages, child -> parent (one Pipe per child, so a child dying mid-message can
corrupt nothing but its own pipe), each a tuple whose first item names it:

    ("hello", pid)
    ("health", state, fps, detail)        # state: "online" | "degraded" | "offline"
    ("stats", {...})                      # frames, dropped, analysed, errors, reconnects, fps, last_frame_age_s ...
    ("alert", AlertEvent)
    ("control", request_id, state, error) # the state after a control request
    ("fatal", text)                       # cannot go on (e.g. the pipeline cannot be built); exits next
    ("bye", reason)

Parent -> child (a second Pipe): ("control", request_id, {"enabled": bool, "sensitivity": float}) and ("stop",).
When the parent goes away the control pipe reaches EOF and the child exits.
"""

from __future__ import annotations

import collections
import importlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.camera.types import AlertEvent, Frame, SourceError

__all__ = [
    "CameraWorker",
    "FrameQueue",
    "RateMeter",
    "WorkerSpec",
    "default_pipeline",
    "describe_exit",
]

EXIT_STUCK = 70
EXIT_FATAL = 71


def default_pipeline(camera: Any, tz: str) -> Any:
    """The real pipeline (adapters/camera/pipeline.py) with its default detector."""
    from adapters.camera.pipeline import Pipeline  # imported in the child only

    return Pipeline(camera, tz=tz)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a camera's child process needs; pickled to it at spawn."""

    camera: Any  # dispatch.district.Camera
    tz: str = "UTC"
    base_dir: str | None = None  # relative file streams resolve against it (the district file's folder)
    pipeline_factory: Callable[..., Any] | None = None  # (camera, tz=...) -> Pipeline; None: default_pipeline
    enabled: bool = True
    sensitivity: float = 0.5
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 5.0
    stuck_s: float = 30.0
    report_interval_s: float = 1.0
    queue_size: int = 2
    cv_threads: int = 1
    degraded_ratio: float = 0.7  # measured fps below this share of the detect fps is degraded
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def camera_id(self) -> str:
        return str(self.camera.id)


# --------------------------------------------------------------------------- small parts (also used by tests)


class FrameQueue:
    """A bounded queue that drops the OLDEST item when full and counts the drops."""

    def __init__(self, maxsize: int = 2) -> None:
        self.maxsize = max(1, maxsize)
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def put(self, item: Any) -> None:
        with self._cond:
            while len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; raises queue.Empty after `timeout`."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items), timeout):
                raise queue.Empty
            return self._items.popleft()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class RateMeter:
    """Events per second over a sliding window (frames captured, frames analysed)."""

    def __init__(self, window_s: float = 3.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.count = 0
        self.last: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._times.append(now)
            self.count += 1
            self.last = now
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def reset(self) -> None:
        with self._lock:
            self._times.clear()

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = max(now - self._times[0], self._times[-1] - self._times[0])
            # a window not yet full (just connected) is measured over what it has
            return (n - 1) / span if span > 0 else 0.0


def describe_exit(code: int | None) -> str:
    """An exit code in words: 'exited with code 71', 'killed by SIGABRT (aborted ...)'."""
    if code is None:
        return "is still running"
    if code == 0:
        return "exited"
    if code == EXIT_STUCK:
        return "ended itself: capture was stuck"
    if code == EXIT_FATAL:
        return "ended itself: it cannot run (see the reason reported before)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = {
            "SIGABRT": " (aborted, e.g. inside the video decoder)",
            "SIGSEGV": " (crashed, e.g. inside the video decoder)",
            "SIGKILL": " (killed, e.g. out of memory)",
        }.get(name, "")
        return f"killed by {name}{why}"
    return f"exited with code {code}"


# --------------------------------------------------------------------------- parent side


class CameraWorker:
    """The parent's handle on one camera's child process.

    `deliver(message)` is called from a reader thread for every message the
    child sends, then once with ("exit", exitcode) when the child is gone
    (whatever the reason). The runner hands these to its event loop.
    """

    def __init__(self, spec: WorkerSpec, deliver: Callable[[tuple[Any, ...]], None]) -> None:
        self.spec = spec
        self.deliver = deliver
        self.proc: Any = None
        self._ctl: Any = None
        self._ctl_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    @property
    def exitcode(self) -> int | None:
        return self.proc.exitcode if self.proc is not None else None

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        up_r, up_w = ctx.Pipe(duplex=False)
        down_r, down_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=child_main, args=(self.spec, up_w, down_r), name=f"camera-{self.spec.camera_id}", daemon=True
        )
        self.proc.start()
        up_w.close()  # the child's ends: the parent keeps only its own, so EOF means the child is gone
        down_r.close()
        self._ctl = down_w
        self.started_at = time.monotonic()
        self._reader = threading.Thread(
            target=self._read, args=(up_r,), name=f"camera-{self.spec.camera_id}-reader", daemon=True
        )
        self._reader.start()

    def _read(self, conn: Any) -> None:
        try:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    break
                except Exception as e:  # a message cut short by a crash
                    self.deliver(("error", f"unreadable message from the worker: {e!r}"))
                    break
                self.deliver(msg)
        finally:
            conn.close()
            proc = self.proc
            proc.join(3.0)
            if proc.exitcode is None:  # it closed its pipe but lives on: end it
                proc.kill()
                proc.join(3.0)
            self.deliver(("exit", proc.exitcode))

    def send(self, msg: tuple[Any, ...]) -> bool:
        with self._ctl_lock:
            if self._ctl is None:
                return False
            try:
                self._ctl.send(msg)
                return True
            except (OSError, ValueError, BrokenPipeError):
                return False

    def control(self, request_id: str, changes: dict[str, Any]) -> bool:
        return self.send(("control", request_id, changes))

    def request_stop(self) -> bool:
        """Ask the child to end its events and exit, without waiting (see `stop`)."""
        return self.send(("stop",))

    def stop(self, timeout: float = 5.0) -> int | None:
        """Ask the child to end its events and exit; SIGTERM, then SIGKILL, if it does not. Blocking."""
        if self.proc is None:
            return None
        self.request_stop()  # a second request after `request_stop()` is harmless: the child reads only the first
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(2.0)
        with self._ctl_lock:
            if self._ctl is not None:
                self._ctl.close()
                self._ctl = None
        if self._reader is not None:
            self._reader.join(5.0)
        return self.proc.exitcode

    def kill(self) -> None:
        """SIGKILL the child (tests; a stuck child)."""
        if self.proc is not None and self.proc.exitcode is None:
            self.proc.kill()


# --------------------------------------------------------------------------- child side


def child_main(spec: WorkerSpec, up: Any, down: Any) -> None:
    """Entry point of the camera's child process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the adapter, which stops us in order
    # a hostile stream makes FFmpeg log an error per packet: keep FFmpeg quiet (the
    # SourceError says what matters); set OPENCV_FFMPEG_LOGLEVEL=16 to see FFmpeg's errors again
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    try:
        import cv2

        cv2.setNumThreads(max(1, spec.cv_threads))
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except Exception:
        pass
    worker = _Child(spec, up, down)
    code = 0
    try:
        code = worker.run()
    except BaseException:  # last resort: say why, then go
        worker.send(("fatal", "worker failed: " + traceback.format_exc(limit=8)))
        code = EXIT_FATAL
    finally:
        try:
            up.close()
        except Exception:
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # capture may be blocked inside FFmpeg: do not wait for its thread


class _Child:
    def __init__(self, spec: WorkerSpec, up: Any, down: Any) -> None:
        self.spec = spec
        self.up = up
        self.down = down
        self.cam = spec.camera
        self.detect_fps = float(getattr(getattr(self.cam, "detect", None), "fps", 5.0) or 5.0)
        self.frames = FrameQueue(spec.queue_size)
        self.captured = RateMeter(3.0)
        self.analysed = RateMeter(3.0)
        self.stop = threading.Event()
        self._send_lock = threading.Lock()
        self.controls: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        # capture state (written by the capture thread, read by the watchdog)
        self.connected = False
        self.ended = False  # a file without loop reached its end
        self.source_fps: float | None = None
        self.last_error = ""
        self.retry_at: float | None = None
        self.in_call: tuple[str, float] | None = None  # ("open"|"read", since)
        self.drops: collections.deque[float] = collections.deque(maxlen=50)  # a flowing stream broke
        self.attempts_failed = 0  # opens or reads that failed, over the worker's life
        self.connected_at: float | None = None
        # analysis state
        self.enabled = spec.enabled
        self.sensitivity = spec.sensitivity
        self.errors = 0
        self.last_analysis_error: tuple[float, str] | None = None
        self.events_sent = 0
        self.last_frame_t: float | None = None  # frame time of the last frame analysed

    # -- plumbing
    def send(self, msg: tuple[Any, ...]) -> None:
        with self._send_lock:
            try:
                self.up.send(msg)
            except (OSError, ValueError, BrokenPipeError):
                os._exit(0)  # the adapter is gone; nobody to work for

    # -- main
    def run(self) -> int:
        self.send(("hello", os.getpid()))
        threading.Thread(target=self._control_loop, name="control", daemon=True).start()
        try:
            factory = self.spec.pipeline_factory or default_pipeline
            pipeline = factory(self.cam, tz=self.spec.tz)
            if hasattr(pipeline, "set_enabled"):
                pipeline.set_enabled(self.enabled)
            if hasattr(pipeline, "set_sensitivity"):
                pipeline.set_sensitivity(self.sensitivity)
        except Exception as e:
            self.send(("fatal", f"the detection pipeline cannot start: {type(e).__name__}: {e}"))
            return EXIT_FATAL
        threading.Thread(target=self._capture_loop, name="capture", daemon=True).start()
        threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True).start()
        self._analysis_loop(pipeline)
        # stopping: close open events so none is left dangling
        try:
            out = pipeline.flush(time.time()) if hasattr(pipeline, "flush") else None
            for ev in _events_of(out):
                self.send(("alert", ev))
        except Exception as e:
            self.send(("error", f"flush failed: {type(e).__name__}: {e}"))
        self.send(("bye", "stopped"))
        return 0

    def _control_loop(self) -> None:
        while True:
            try:
                msg = self.down.recv()
            except (EOFError, OSError):
                self.stop.set()  # parent gone
                return
            except Exception:
                continue
            if not isinstance(msg, tuple) or not msg:
                continue
            if msg[0] == "stop":
                self.stop.set()
                return
            if msg[0] == "control":
                self.controls.put(msg)

    def _apply_controls(self, pipeline: Any) -> None:
        while True:
            try:
                _, req, changes = self.controls.get_nowait()
            except queue.Empty:
                return
            error = ""
            try:
                if changes.get("enabled") is not None:
                    on = bool(changes["enabled"])
                    if hasattr(pipeline, "set_enabled"):
                        pipeline.set_enabled(on)
                    self.enabled = on
                if changes.get("sensitivity") is not None:
                    s = float(changes["sensitivity"])
                    if not 0.0 <= s <= 1.0:
                        raise ValueError(f"sensitivity {s:g} is outside 0..1")
                    if hasattr(pipeline, "set_sensitivity"):
                        pipeline.set_sensitivity(s)
                    self.sensitivity = s
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
            self.send(("control", req, {"enabled": self.enabled, "sensitivity": self.sensitivity}, error))

    def _analysis_loop(self, pipeline: Any) -> None:
        while not self.stop.is_set():
            self._apply_controls(pipeline)
            try:
                frame: Frame = self.frames.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                result = pipeline.process(frame)
            except Exception as e:
                self.errors += 1
                text = f"{type(e).__name__}: {e}"
                self.last_analysis_error = (time.monotonic(), text)
                if self.errors == 1 or self.errors % 100 == 0:
                    self.send(("error", f"analysis failed on frame {frame.index} ({self.errors} failures so far): {text}"))
                continue
            self.last_frame_t = frame.t
            if not getattr(result, "skipped", False):
                self.analysed.tick()
            for ev in _events_of(result):
                self.events_sent += 1
                self.send(("alert", ev))

    # -- capture
    def _capture_loop(self) -> None:
        from adapters.camera.sources import open_source

        backoff = self.spec.backoff_initial_s
        while not self.stop.is_set():
            src = None
            try:
                src = open_source(
                    self.cam.stream,
                    loop=bool(getattr(self.cam, "loop", False)),
                    open_timeout_s=self.spec.open_timeout_s,
                    read_timeout_s=self.spec.read_timeout_s,
                    base_dir=self.spec.base_dir,
                )
                self.in_call = ("open", time.monotonic())
                src.open()
                self.in_call = None
                self.source_fps = src.fps
                got_frames = False
                while not self.stop.is_set():
                    self.in_call = ("read", time.monotonic())
                    frame = src.read()
                    self.in_call = None
                    if frame is None:
                        self.ended = True
                        self.connected = False
                        self.last_error = "end of the video file (loop is off)"
                        return
                    if not got_frames:
                        got_frames = True
                        self.connected = True
                        self.connected_at = time.monotonic()
                        self.captured.reset()
                        self.last_error = ""
                        self.retry_at = None
                    self.captured.tick()
                    self.frames.put(frame)
                if got_frames:
                    backoff = self.spec.backoff_initial_s
            except SourceError as e:
                self.in_call = None
                self.last_error = str(e)
            except Exception as e:  # a bug or an OpenCV error: treat as a broken stream, keep going
                self.in_call = None
                self.last_error = f"{type(e).__name__}: {e}"
            finally:
                self.in_call = None
                if src is not None:
                    try:
                        src.close()
                    except Exception:
                        pass
            if self.stop.is_set():
                return
            if self.connected:  # frames were flowing: start the backoff again from the bottom
                backoff = self.spec.backoff_initial_s
                self.drops.append(time.monotonic())
            self.connected = False
            self.attempts_failed += 1
            self.retry_at = time.monotonic() + backoff
            self.stop.wait(backoff)
            backoff = min(backoff * 2, self.spec.backoff_max_s)

    # -- watchdog, health, counters
    def health(self, now: float) -> tuple[str, float, str]:
        fps = round(self.captured.rate(now), 2)
        if not self.connected:
            if self.ended:
                return "offline", 0.0, self.last_error
            why = self.last_error or f"connecting to {_shown(self.cam.stream)}"
            if self.retry_at is not None and self.retry_at > now:
                why += f"; retrying in {self.retry_at - now:.1f} s"
            return "offline", 0.0, why
        last = self.captured.last
        if last is not None and now - last > max(2.0, 3.0 / self.detect_fps):
            return "degraded", fps, f"no frame for {now - last:.1f} s"
        problems = []
        settled = self.connected_at is not None and now - self.connected_at >= 3.0
        need = self.detect_fps * self.spec.degraded_ratio
        if settled and fps < need:
            problems.append(f"measured {fps:.1f} fps, the detector needs {self.detect_fps:g}")
        if self.last_analysis_error and now - self.last_analysis_error[0] < 10.0:
            problems.append(f"analysis failing: {self.last_analysis_error[1]}")
        elif settled and self.enabled:
            a = self.analysed.rate(now)
            want = min(self.detect_fps, fps) * self.spec.degraded_ratio
            if a < want and self.frames.dropped:
                problems.append(f"analysis keeps up with {a:.1f} of {min(self.detect_fps, fps):.1f} fps")
        recent = [t for t in self.drops if now - t < 60.0]
        if len(recent) >= 3:
            problems.append(f"unstable: the stream broke {len(recent)} times in the last minute")
        if problems:
            return "degraded", fps, "; ".join(problems)
        return "online", fps, f"{fps:.1f} fps" + (f" (source {self.source_fps:g})" if self.source_fps else "")

    def _watchdog_loop(self) -> None:
        last_sent: tuple[str, str] | None = None
        last_report = 0.0
        while not self.stop.wait(0.25):
            now = time.monotonic()
            call = self.in_call
            if call is not None and now - call[1] > self.spec.stuck_s:
                what, since = call
                self.send(("health", "offline", 0.0, f"capture stuck in {what} for {now - since:.0f} s; restarting the worker"))
                self.send(("bye", "stuck"))
                os._exit(EXIT_STUCK)
            state, fps, detail = self.health(now)
            key = (state, detail.split(";")[0] if state == "offline" else state)
            if key != last_sent or now - last_report >= self.spec.report_interval_s:
                self.send(("health", state, fps, detail))
                self.send(("stats", self.counters(now)))
                last_sent, last_report = key, now

    def counters(self, now: float) -> dict[str, Any]:
        last = self.captured.last
        return {
            "frames": self.captured.count,
            "dropped": self.frames.dropped,
            "analysed": self.analysed.count,
            "errors": self.errors,
            "reconnects": self.attempts_failed,
            "drops": len(self.drops),
            "fps": round(self.captured.rate(now), 2),
            "analysis_fps": round(self.analysed.rate(now), 2),
            "last_frame_age_s": None if last is None else round(now - last, 3),
            "connected": self.connected,
            "enabled": self.enabled,
            "sensitivity": self.sensitivity,
            "events": self.events_sent,
        }


def _events_of(out: Any) -> list[AlertEvent]:
    if out is None:
        return []
    if hasattr(out, "events"):
        return list(out.events or [])
    if isinstance(out, AlertEvent):
        return [out]
    try:
        return [e for e in out if isinstance(e, AlertEvent) or hasattr(e, "event_id")]
    except TypeError:
        return []


def _shown(url: str) -> str:
    from adapters.camera.sources import redact

    return redact(url)


def load_factory(path: str) -> Callable[..., Any]:
    """'package.module:name' -> the object (for --pipeline on the command line)."""
    mod, _, name = path.partition(":")
    obj: Any = importlib.import_module(mod)
    for part in (name or "Pipeline").split("."):
        obj = getattr(obj, part)
    return obj

