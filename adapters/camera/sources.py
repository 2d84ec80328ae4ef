"""Frame sources: where a camera's frames come from, behind the `FrameSource` Protocol.

    src = open_source("rtsp://10.0.0.7:554/sub", open_timeout_s=5, read_timeout_s=5)
    src.open()                       # SourceError("cannot open rtsp://10.0.0.7:554/sub: timed out after 5 s")
    while (frame := src.read()) is not None:
        ...                          # Frame(image, t, index); SourceError when the stream breaks
    src.close()

One explicit registry maps a stream's scheme to a source class (`SOURCES`,
`register_source`): rtsp(s)://, http(s):// (MJPEG, or anything FFmpeg can
demux over HTTP), `device:N` and plain file paths. Network streams and files
are read through OpenCV's FFmpeg backend with its open and read timeouts
(`CAP_PROP_OPEN_TIMEOUT_MSEC`, `CAP_PROP_READ_TIMEOUT_MSEC`), so a stalled
camera makes `read()` fail after `read_timeout_s` instead of hanging.

A file is played like a camera by default (`pace=True`): at its own frame
rate, stamped with the wall clock, and started again at its end when
`loop=True`. With `pace=False` it is read as fast as possible and stamped with
its video position (offline analysis).

Decoding a hostile file or stream can abort the whole process inside FFmpeg;
the camera worker therefore runs every source in a child process of its own
(adapters/camera/worker.py). Nothing here is safe against that by itself.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2

from adapters.camera.frameclock import FrameClock
from adapters.camera.types import Frame, FrameSource, SourceError

__all__ = [
    "DeviceSource",
    "FileSource",
    "NetworkSource",
    "SOURCES",
    "SourceError",
    "check_url",
    "open_source",
    "redact",
    "register_source",
    "scheme_of",
]

_FPS_RANGE = (0.5, 121.0)  # a reported rate outside this is a container's placeholder, not a rate
_DEFAULT_FILE_FPS = 25.0


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password:
            return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
    except ValueError:
        pass
    return url


def scheme_of(url: str) -> str:
    """The registry key of a stream: 'rtsp', 'http', 'device', or 'file' for a path."""
    u = url.strip()
    if "://" in u:
        return u.split("://", 1)[0].lower()
    if u.lower().startswith("device:"):
        return "device"
    if u.lower().startswith("file:"):
        return "file"
    return "file"


def _native_fps(cap: Any) -> float | None:
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if _FPS_RANGE[0] <= fps <= _FPS_RANGE[1] else None


# --------------------------------------------------------------------------- network streams


class NetworkSource:
    """rtsp://, rtsps://, http:// and https:// streams through OpenCV's FFmpeg backend.

    Before FFmpeg opens the stream, a plain TCP connect to the host says the
    common failures in words (unknown host, connection refused, timed out);
    FFmpeg then gets `open_timeout_s` to find a video in it and every later
    `read()` gets `read_timeout_s`. After a failed read the capture is spent
    (FFmpeg's interrupt callback has fired); the caller closes and reopens.
    """

    def __init__(self, url: str, open_timeout_s: float = 5.0, read_timeout_s: float = 5.0, **_: Any) -> None:
        self.url = url
        self.fps: float | None = None
        self.open_timeout_s = float(open_timeout_s)
        self.read_timeout_s = float(read_timeout_s)
        self._cap: Any = None
        self._index = 0
        self.clock = FrameClock()
        self.shown = redact(url)

    def _probe_tcp(self) -> None:
        parts = urlsplit(self.url)
        host = parts.hostname
        if not host:
            raise SourceError(f"cannot open {self.shown}: the URL names no host")
        scheme = parts.scheme.lower()
        port = parts.port or {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(scheme, 80)
        t0 = time.monotonic()
        try:
            socket.create_connection((host, port), timeout=self.open_timeout_s).close()
        except socket.gaierror:
            raise SourceError(f"cannot open {self.shown}: unknown host {host!r}") from None
        except ConnectionRefusedError:
            raise SourceError(f"cannot open {self.shown}: connection refused by {host}:{port}") from None
        except (socket.timeout, TimeoutError):
            raise SourceError(f"cannot open {self.shown}: timed out after {self.open_timeout_s:g} s") from None
        except OSError as e:
            if time.monotonic() - t0 >= self.open_timeout_s * 0.9:
                raise SourceError(f"cannot open {self.shown}: timed out after {self.open_timeout_s:g} s") from None
            raise SourceError(f"cannot open {self.shown}: {e.strerror or e}") from None

    def open(self) -> None:
        self.close()
        self._probe_tcp()
        if self.url.lower().startswith("rtsp") and "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
            # interleaved RTSP over the TCP connection: no lost UDP packets, passes NAT and firewalls
            os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.read_timeout_s * 1000),
        ]
        t0 = time.monotonic()
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        took = time.monotonic() - t0
        if not cap.isOpened():
            cap.release()
            if took >= self.open_timeout_s * 0.9:
                raise SourceError(f"cannot open {self.shown}: timed out after {self.open_timeout_s:g} s")
            raise SourceError(
                f"cannot open {self.shown}: connected, but no video stream could be opened "
                "(wrong path, authentication required, or not a video stream)"
            )
        self._cap = cap
        # RTSP carries the camera's rate; over HTTP (MJPEG) FFmpeg reports a placeholder (25)
        self.fps = _native_fps(cap) if self.url.lower().startswith("rtsp") else None
        self.clock = FrameClock(self.fps)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.shown} is not open")
        t0 = time.monotonic()
        ok, image = self._cap.read()
        if not ok or image is None or image.size == 0:
            took = time.monotonic() - t0
            if took >= self.read_timeout_s * 0.9:
                raise SourceError(f"no frame from {self.shown}: timed out after {self.read_timeout_s:g} s")
            what = "no frame could be decoded" if self._index == 0 else "the stream ended or broke"
            raise SourceError(f"no frame from {self.shown}: {what}")
        self._index += 1
        # frames that queued while we were held up get their capture time, not the time we read them
        return Frame(image=image, t=self.clock.stamp(time.time(), time.monotonic() - t0), index=self._index)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- local capture device


class DeviceSource:
    """`device:N`: a local capture device (V4L2 on Linux)."""

    def __init__(self, url: str, read_timeout_s: float = 5.0, **_: Any) -> None:
        self.url = url
        self.fps: float | None = None
        raw = url.split(":", 1)[1] if ":" in url else ""
        if not raw.isdigit():
            raise SourceError(f"cannot open {url}: device:N needs a device number such as device:0")
        self.number = int(raw)
        self.read_timeout_s = read_timeout_s
        self._cap: Any = None
        self._index = 0
        self.clock = FrameClock()

    def open(self) -> None:
        self.close()
        api = cv2.CAP_V4L2 if os.name == "posix" and Path("/dev").is_dir() else cv2.CAP_ANY
        if api == cv2.CAP_V4L2 and not Path(f"/dev/video{self.number}").exists():
            raise SourceError(f"cannot open {self.url}: /dev/video{self.number} does not exist")
        cap = cv2.VideoCapture(self.number, api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.url}: the device refused (busy, no permission, or not a camera)")
        self._cap = cap
        self.fps = _native_fps(cap)
        self.clock = FrameClock(self.fps)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.url} is not open")
        t0 = time.monotonic()
        ok, image = self._cap.read()
        if not ok or image is None or image.size == 0:
            raise SourceError(f"no frame from {self.url}: the device stopped delivering")
        self._index += 1
        return Frame(image=image, t=self.clock.stamp(time.time(), time.monotonic() - t0), index=self._index)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- video files


class FileSource:
    """A video file, played like a camera (`pace=True`) or read as fast as possible.

    Paced: one frame every 1/fps seconds of the file's own rate, stamped with
    `time.time()`; a consumer that falls behind by more than a second resets
    the schedule instead of receiving a burst. Unpaced: stamped with the video
    position in seconds. `loop=True` starts again at the end (the frame index
    keeps counting, so it stays unique); otherwise `read()` returns None there.
    """

    def __init__(self, url: str, loop: bool = False, pace: bool = True, base_dir: str | Path | None = None, **_: Any) -> None:
        self.url = url
        path = url[5:] if url.lower().startswith("file:") else url
        p = Path(path).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        self.path = p
        self.loop = loop
        self.pace = pace
        self.fps: float | None = None
        self._cap: Any = None
        self._index = 0  # frames delivered, over every loop
        self._in_pass = 0  # frames delivered in this pass through the file
        self._anchor: float | None = None  # wall time of frame 0 of the pacing schedule
        self._paced = 0  # frames on the current schedule
        self._passes = 0

    def _open_cap(self) -> Any:
        if not self.path.exists():
            raise SourceError(f"cannot open {self.url}: no such file ({self.path})")
        if not self.path.is_file():
            raise SourceError(f"cannot open {self.url}: not a file ({self.path})")
        if self.path.stat().st_size == 0:
            raise SourceError(f"cannot open {self.url}: the file is empty")
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.url}: not a video file OpenCV can decode (corrupt or unknown format)")
        return cap

    def open(self) -> None:
        self.close()
        self._cap = self._open_cap()
        self.fps = _native_fps(self._cap)
        self._in_pass = 0
        self._anchor = None
        self._paced = 0

    @property
    def rate(self) -> float:
        return self.fps or _DEFAULT_FILE_FPS

    def _next_image(self) -> Any:
        ok, image = self._cap.read()
        if ok and image is not None and image.size:
            return image
        if not self.loop:
            return None
        if self._in_pass == 0:
            raise SourceError(f"no frame from {self.url}: the file holds no decodable frame")
        # start again: seek where the container allows it, else reopen
        self._passes += 1
        self._in_pass = 0
        if not self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0):
            self._cap.release()
            self._cap = self._open_cap()
        ok, image = self._cap.read()
        if not ok or image is None or not image.size:
            self._cap.release()
            self._cap = self._open_cap()
            ok, image = self._cap.read()
            if not ok or image is None or not image.size:
                raise SourceError(f"no frame from {self.url}: cannot start the file again")
        return image

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.url} is not open")
        if self.pace:
            now = time.monotonic()
            if self._anchor is None or now - (self._anchor + self._paced / self.rate) > 1.0:
                self._anchor, self._paced = now, 0  # first frame, or we fell behind: no burst
            due = self._anchor + self._paced / self.rate
            if due > now:
                time.sleep(due - now)
            self._paced += 1
        image = self._next_image()
        if image is None:
            return None
        pos = self._in_pass / self.rate
        self._in_pass += 1
        self._index += 1
        t = time.time() if self.pace else pos
        return Frame(image=image, t=t, index=self._index)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- registry

SourceFactory = Callable[..., FrameSource]

SOURCES: dict[str, SourceFactory] = {
    "rtsp": NetworkSource,
    "rtsps": NetworkSource,
    "http": NetworkSource,
    "https": NetworkSource,
    "device": DeviceSource,
    "file": FileSource,
}
"""Scheme -> source class. Keys are what `scheme_of(url)` returns."""


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Add a source for a new scheme (e.g. a synthetic camera's `scene://`)."""
    SOURCES[scheme.lower()] = factory


def check_url(url: str) -> None:
    """Raise SourceError when no registered source reads this URL."""
    if not url or not url.strip():
        raise SourceError("the stream is empty (use rtsp://..., http(s)://..., a file path or device:N)")
    scheme = scheme_of(url)
    if scheme not in SOURCES:
        known = ", ".join(f"{s}://" for s in sorted(SOURCES) if s not in ("file", "device"))
        raise SourceError(f"cannot open {redact(url)}: scheme {scheme!r} is not supported (use {known}, a file path or device:N)")


def open_source(
    url: str,
    loop: bool = False,
    open_timeout_s: float = 5.0,
    read_timeout_s: float = 5.0,
    *,
    pace: bool = True,
    base_dir: str | Path | None = None,
) -> FrameSource:
    """The source for `url` (not opened yet: call `.open()`); SourceError for an unknown scheme.

    `loop`, `pace` and `base_dir` (relative file paths resolve against it, e.g.
    the district file's folder) matter for files only; the timeouts for network
    streams.
    """
    check_url(url)
    factory = SOURCES[scheme_of(url)]
    return factory(
        url.strip(), loop=loop, open_timeout_s=open_timeout_s, read_timeout_s=read_timeout_s, pace=pace, base_dir=base_dir
    )
