"""A live MJPEG-over-HTTP camera server, like an IP camera's, for the synthetic cameras.

``GET /cam/<id>.mjpg`` answers ``multipart/x-mixed-replace; boundary=frame`` with one JPEG
part per frame (what OpenCV / FFmpeg, browsers and Frigate read from IP cameras);
``GET /cam/<id>.jpg`` is one snapshot; ``GET /`` lists the cameras as JSON.

Sources: a `Scene` rendered in real time (scene time = start offset + wall time since the
camera was added x `speed`, optionally looped every `loop_s` scene seconds), or a video file
streamed at its own frame rate (looped or not). Each frame is rendered and JPEG-encoded once
and shared by every client of that camera; a slow client skips frames rather than queueing
them, and nothing renders for a camera nobody watches.

Test controls (each camera):
    stop_camera(id)               the stream dies: open connections are dropped and new ones
                                  get 503 (mode="drop"), or connections stay open and nothing
                                  is sent, not even to new clients (mode="hang": reads time out)
    resume_camera(id)             back to normal; new connections stream again
    garbage(id)                   clients get multipart parts whose bodies are random bytes, not
                                  JPEG (mode="parts"), or raw random bytes with no framing (mode="raw")
A scene's scripted ``stream_dies`` interval behaves like mode="hang".

The server runs in its own threads (a ThreadingHTTPServer), so it works the same from a
pytest fixture, from asyncio code (``await server.astart()``) and as a subprocess::

    python -m simulators.mjpeg --scenario walk_through_gate --port 8554 --id cam01
    python -m simulators.mjpeg --camera cam01=busy --camera cam02=loiter_gate --file cam03=clip.mp4

It prints one ``READY <id> <url>`` line per camera once it listens, then serves until
SIGINT / SIGTERM. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simulators.scene import SCENARIOS, Scene

BOUNDARY = "frame"


@dataclass
class _Camera:
    id: str
    fps: float
    scene: Scene | None = None
    path: str | None = None
    loop: bool = True
    loop_s: float | None = None
    speed: float = 1.0
    t0: float = 0.0
    quality: int = 80
    state: str = "live"  # live | drop | hang | garbage
    garbage_mode: str = "parts"
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)
    cache_slot: int = -1
    cache: bytes | None = None
    frames_rendered: int = 0
    clients: set = field(default_factory=set)  # open client sockets
    # file source state
    cap: Any = None
    file_index: int = -1
    file_base: float = 0.0
    file_frame: np.ndarray | None = None
    ended: bool = False

    def slot_now(self) -> int:
        return int((time.monotonic() - self.started) * self.fps)

    def slot_time(self, slot: int) -> float:
        return self.started + slot / self.fps

    def scene_time(self, slot: int) -> float:
        t = slot / self.fps * self.speed
        if self.loop_s:
            t = t % self.loop_s
        return self.t0 + t

    def scripted_dead(self, slot: int) -> bool:
        return self.scene is not None and not self.scene.stream_alive(self.scene_time(slot))

    def frame(self, slot: int) -> bytes | None:
        """The JPEG of `slot`, rendered once for every client; None when a non-looping file ended."""
        with self.lock:
            if slot == self.cache_slot and self.cache is not None:
                return self.cache
            if self.scene is not None:
                img = self.scene.render(self.scene_time(slot))
            else:
                img = self._file_frame(slot)
                if img is None:
                    return None
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                return self.cache
            self.cache_slot, self.cache = slot, buf.tobytes()
            self.frames_rendered += 1
            return self.cache

    def _file_frame(self, slot: int) -> np.ndarray | None:
        # The capture is opened in add_file, never here: OpenCV's FFmpeg backend serialises opens
        # process-wide, so opening here (in a client's thread) would wait for a client in this same
        # process that is itself inside VideoCapture(url) open, waiting for us: a deadlock until its
        # open timeout. Looping seeks back instead of reopening, for the same reason.
        if self.ended or self.cap is None:
            return None
        if self.file_index < 0 and self.file_frame is None:
            self.file_base = slot
        want = slot - self.file_base
        rewound = False
        while self.file_index < want:
            ok, img = self.cap.read()
            if not ok:
                if not self.loop or self.file_index < 0 or rewound:  # the end (or an unreadable file)
                    self.ended = True
                    return None
                self.cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                rewound = True
                self.file_base = slot
                self.file_index = -1
                want = 0
                continue
            rewound = False
            self.file_index += 1
            self.file_frame = img
        return self.file_frame

    def close_clients(self) -> None:
        for s in list(self.clients):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _garbage(rng: np.random.Generator, n: int) -> bytes:
    b = bytearray(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    if b[:2] == b"\xff\xd8":
        b[0] = 0
    return bytes(b)


class _Handler(BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.json"):
            body = json.dumps(owner.status()).encode()
            self._plain(200, body, "application/json")
            return
        if path.startswith("/cam/"):
            name = path[len("/cam/"):]
            for ext in (".mjpg", ".jpg"):
                if name.endswith(ext):
                    cam = owner._cams.get(name[: -len(ext)])
                    if cam is None:
                        break
                    if ext == ".jpg":
                        self._snapshot(cam)
                    else:
                        self._stream(cam)
                    return
        self._plain(404, b"no such camera\n")

    def _plain(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def _snapshot(self, cam: _Camera) -> None:
        if cam.state in ("drop", "hang"):
            self._plain(503, b"camera offline\n")
            return
        jpg = cam.frame(cam.slot_now())
        if jpg is None:
            self._plain(503, b"stream ended\n")
            return
        self._plain(200, jpg, "image/jpeg")

    def _stream(self, cam: _Camera) -> None:
        owner = self.server.owner
        stop = owner._stopping
        if cam.state == "drop":
            self._plain(503, b"camera offline\n")
            return
        sock = self.connection
        cam.clients.add(sock)
        rng = np.random.default_rng()
        try:
            # a dead ("hang") camera accepts the connection and then says nothing
            while not stop.is_set() and (cam.state == "hang" or cam.scripted_dead(cam.slot_now())):
                time.sleep(0.05)
            if stop.is_set() or cam.state == "drop":
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
            self.send_header("Pragma", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.flush()
            slot = cam.slot_now()
            while not stop.is_set():
                state = cam.state
                if state == "drop":
                    return
                if state == "hang" or cam.scripted_dead(slot):
                    time.sleep(0.05)
                    slot = cam.slot_now()
                    continue
                delay = cam.slot_time(slot) - time.monotonic()
                if delay > 0:
                    stop.wait(min(delay, 0.5))
                    continue
                if state == "garbage":
                    if cam.garbage_mode == "raw":
                        self.wfile.write(_garbage(rng, 4096))
                    else:
                        body = _garbage(rng, int(rng.integers(2000, 20000)))
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n"
                        )
                else:
                    jpg = cam.frame(slot)
                    if jpg is None:
                        return  # a file that ended and does not loop
                    self.wfile.write(
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n"
                    )
                self.wfile.flush()
                slot = max(slot + 1, cam.slot_now())  # a slow client skips frames
        except OSError:
            return  # the client went away (or we dropped it)
        finally:
            cam.clients.discard(sock)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "MjpegServer"

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client error never stops the server
        pass


class MjpegServer:
    """Serve synthetic cameras as MJPEG over HTTP. See the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, quality: int = 80):
        self.host = host
        self._port = port
        self.quality = quality
        self._cams: dict[str, _Camera] = {}
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -------------------------------------------------------------- cameras

    def add_camera(self, id: str, scene: Scene, fps: float | None = None, loop_s: float | None = None, speed: float = 1.0,
                   t0: float = 0.0) -> str:
        """Serve `scene` rendered live at `fps` (default: the scene's); returns the URL."""
        self._check_new(id)
        self._cams[id] = _Camera(id=id, fps=float(fps or scene.fps), scene=scene, loop_s=loop_s, speed=float(speed), t0=float(t0),
                                 quality=self.quality)
        return self.url(id)

    def add_file(self, id: str, path: str | Path, loop: bool = True, fps: float | None = None) -> str:
        """Serve a video file at its own frame rate (or `fps`), looping by default; returns the URL."""
        self._check_new(id)
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(p)
        cap = cv2.VideoCapture(str(p))  # opened here, before any client (see _Camera._file_frame)
        if not cap.isOpened():
            raise ValueError(f"cannot open video file {p}")
        native = cap.get(cv2.CAP_PROP_FPS)
        self._cams[id] = _Camera(id=id, fps=float(fps or native or 15.0), path=str(p), loop=loop, quality=self.quality, cap=cap)
        return self.url(id)

    def remove_camera(self, id: str) -> None:
        cam = self._cams.pop(id)
        cam.state = "drop"
        cam.close_clients()
        with cam.lock:
            if cam.cap is not None:
                cam.cap.release()
                cam.cap = None

    def _check_new(self, id: str) -> None:
        if not id or "/" in id or id in self._cams:
            raise ValueError(f"camera id {id!r} is empty, has a '/', or is already served")

    def url(self, id: str) -> str:
        return f"http://{self.host}:{self.port}/cam/{id}.mjpg"

    def snapshot_url(self, id: str) -> str:
        return f"http://{self.host}:{self.port}/cam/{id}.jpg"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1] if self._httpd else self._port

    def scene_time(self, id: str) -> float:
        """Scene time being served now for a scene camera (map truth to wall time with it)."""
        cam = self._cams[id]
        return cam.scene_time(cam.slot_now())

    def camera_started(self, id: str) -> float:
        """Wall time (time.time()) at which the camera's scene time was t0."""
        return self._cams[id].started_wall

    def clients(self, id: str) -> int:
        return len(self._cams[id].clients)

    def frames_rendered(self, id: str) -> int:
        return self._cams[id].frames_rendered

    # -------------------------------------------------------------- controls

    def stop_camera(self, id: str, mode: str = "drop") -> None:
        """The stream dies: 'drop' closes connections and refuses new ones (503); 'hang' keeps
        them open and sends nothing (reads time out)."""
        if mode not in ("drop", "hang"):
            raise ValueError("mode is drop or hang")
        cam = self._cams[id]
        cam.state = mode
        if mode == "drop":
            cam.close_clients()

    def resume_camera(self, id: str) -> None:
        self._cams[id].state = "live"

    def garbage(self, id: str, mode: str = "parts") -> None:
        """Send bytes that are not JPEG: inside multipart parts ('parts') or with no framing at all ('raw')."""
        if mode not in ("parts", "raw"):
            raise ValueError("mode is parts or raw")
        cam = self._cams[id]
        cam.garbage_mode = mode
        cam.state = "garbage"

    def status(self) -> dict[str, Any]:
        return {
            "cameras": {
                cid: {"url": self.url(cid), "state": c.state, "fps": c.fps, "clients": len(c.clients),
                      "source": "scene" if c.scene is not None else c.path,
                      "scene_time": c.scene_time(c.slot_now()) if c.scene is not None else None}
                for cid, c in self._cams.items()
            }
        }

    # -------------------------------------------------------------- life cycle

    def start(self) -> "MjpegServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self._port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="mjpeg-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        for cam in self._cams.values():
            cam.close_clients()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._port = self._httpd.server_address[1]
        self._httpd = None

    async def astart(self) -> "MjpegServer":
        return await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "MjpegServer":
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await self.astop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulators.mjpeg", description="Serve synthetic cameras as MJPEG over HTTP")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), help="one camera playing this scenario (with --id)")
    p.add_argument("--id", default="cam01", help="camera id for --scenario")
    p.add_argument("--camera", action="append", default=[], metavar="ID=SCENARIO", help="a scenario camera (repeatable)")
    p.add_argument("--file", action="append", default=[], metavar="ID=PATH", help="a video file camera, looped (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--speed", type=float, default=1.0, help="scene seconds per wall second")
    p.add_argument("--no-loop", action="store_true", help="do not restart a scenario at its end")
    p.add_argument("--quality", type=int, default=80, help="JPEG quality")
    a = p.parse_args(argv)
    cams: list[tuple[str, str]] = [tuple(c.split("=", 1)) for c in a.camera]  # type: ignore[misc]
    if a.scenario:
        cams.insert(0, (a.id, a.scenario))
    if not cams and not a.file:
        p.error("nothing to serve: give --scenario, --camera or --file")
    server = MjpegServer(a.host, a.port, quality=a.quality)
    for k, (cid, name) in enumerate(cams):
        if name not in SCENARIOS:
            p.error(f"unknown scenario {name!r} (known: {', '.join(sorted(SCENARIOS))})")
        scene = SCENARIOS[name](a.seed + k)
        server.add_camera(cid, scene, fps=a.fps, loop_s=None if a.no_loop else scene.duration, speed=a.speed)
    for spec in a.file:
        cid, path = spec.split("=", 1)
        server.add_file(cid, path, loop=True)
    server.start()
    for cid in server._cams:
        print(f"READY {cid} {server.url(cid)}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
