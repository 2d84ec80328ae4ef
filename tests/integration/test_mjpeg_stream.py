"""The synthetic cameras' live MJPEG-over-HTTP server, read the way the camera adapter reads
cameras: cv2.VideoCapture through FFmpeg, with open and read timeouts.

The server runs in its own threads, so these tests are plain (blocking) tests; a decoder
reading a hostile stream runs in a child process so that it cannot take pytest down.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from simulators.mjpeg import MjpegServer
from simulators.scene import SCENARIOS, Scene, write_clip

REPO = Path(__file__).resolve().parents[2]
TIMEOUTS = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]


def capture(url: str, timeouts: list[int] = TIMEOUTS) -> cv2.VideoCapture:
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, timeouts)


def read_for(cap: cv2.VideoCapture, seconds: float) -> list[np.ndarray]:
    frames = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    return frames


@pytest.fixture
def server():
    srv = MjpegServer()  # 127.0.0.1, a free port
    # a walker in view from the first frame (scene time starts at 5 s)
    srv.add_camera("walk", SCENARIOS["walk_through_gate"](0), fps=15, t0=5.0)
    srv.add_camera("busy", SCENARIOS["busy"](1), fps=10)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_timeout_params_are_supported():
    assert hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC") and hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC")


def test_stream_reads_live_frames_that_change(server):
    assert server.url("walk").startswith("http://127.0.0.1:")
    cap = capture(server.url("walk"))
    try:
        assert cap.isOpened()
        frames = read_for(cap, 2.0)
    finally:
        cap.release()
    assert 20 <= len(frames) <= 40  # 15 fps for ~2 s (plus what was buffered)
    assert all(f.shape == (360, 640, 3) for f in frames)
    # the walker moves: smoothed frames a second apart differ somewhere a lot (not just noise)
    a = cv2.GaussianBlur(frames[0], (5, 5), 0).astype(int)
    b = cv2.GaussianBlur(frames[-1], (5, 5), 0).astype(int)
    assert np.abs(a - b).max() > 60
    assert server.scene_time("walk") > 5.0


def test_two_clients_share_one_render(server):
    results: dict[str, list] = {}

    def client(name: str) -> None:
        cap = capture(server.url("busy"))
        try:
            results[name] = read_for(cap, 2.0) if cap.isOpened() else []
        finally:
            cap.release()

    before = server.frames_rendered("busy")
    threads = [threading.Thread(target=client, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert len(results["a"]) >= 12 and len(results["b"]) >= 12
    assert results["a"][0].shape == (360, 640, 3)
    rendered = server.frames_rendered("busy") - before
    assert rendered < 1.5 * max(len(results["a"]), len(results["b"])) + 5  # one render per frame, not per client


def test_snapshot_and_index(server):
    with urllib.request.urlopen(server.url("walk").replace(".mjpg", ".jpg"), timeout=5) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        img = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (360, 640, 3)
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5) as r:
        assert b'"walk"' in r.read()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/cam/nope.mjpg", timeout=5)
    assert e.value.code == 404


def test_stopped_camera_fails_reads_and_resumes_with_a_new_capture(server):
    cap = capture(server.url("walk"))
    assert cap.isOpened() and len(read_for(cap, 0.5)) > 3
    server.stop_camera("walk")  # connection dropped
    t = time.monotonic()
    ok = True
    for _ in range(100):  # frames already buffered may still come out
        ok, _f = cap.read()
        if not ok:
            break
    assert not ok and time.monotonic() - t < 6
    cap.release()
    dead = capture(server.url("walk"))
    assert not dead.isOpened() or not dead.read()[0]  # refused while stopped
    dead.release()
    server.resume_camera("walk")
    again = capture(server.url("walk"))
    try:
        assert again.isOpened()
        assert len(read_for(again, 1.0)) >= 8
    finally:
        again.release()


def test_hung_camera_makes_reads_time_out(server):
    cap = capture(server.url("walk"), [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000])
    assert cap.isOpened() and cap.read()[0]
    server.stop_camera("walk", mode="hang")  # the socket stays open, nothing more is sent
    t = time.monotonic()
    ok = True
    for _ in range(100):
        ok, _f = cap.read()
        if not ok:
            break
    waited = time.monotonic() - t
    cap.release()
    assert not ok and 1.0 < waited < 8.0
    server.resume_camera("walk")
    again = capture(server.url("walk"))
    assert again.isOpened() and again.read()[0]
    again.release()


GARBAGE_READER = """
import sys, time, cv2
cap = cv2.VideoCapture(sys.argv[1], cv2.CAP_FFMPEG,
                       [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 3000])
good = 0
if cap.isOpened():
    end = time.time() + 2
    while time.time() < end:
        ok, f = cap.read()
        if not ok:
            break
        good += 1
print("GOOD", good)
"""


@pytest.mark.parametrize("mode", ["parts", "raw"])
def test_garbage_does_not_crash_the_server(server, mode):
    server.garbage("walk", mode=mode)
    # raw bytes off the wire are not JPEG
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(b"GET /cam/walk.mjpg HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while len(data) < 30000:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"multipart/x-mixed-replace" in head
    if mode == "parts":
        part_head, _, payload = body.partition(b"\r\n\r\n")
        assert part_head.startswith(b"--frame") and not payload.startswith(b"\xff\xd8")
    else:
        assert not body.startswith(b"--frame")
    # a real decoder on the hostile stream, in a child process
    r = subprocess.run([sys.executable, "-c", GARBAGE_READER, server.url("walk")], capture_output=True, text=True, timeout=60)
    assert "GOOD 0" in r.stdout or r.returncode != 0
    # the server is fine: the other camera streams, and this one after resume
    other = capture(server.url("busy"))
    assert other.isOpened() and other.read()[0]
    other.release()
    server.resume_camera("walk")
    cap = capture(server.url("walk"))
    try:
        assert cap.isOpened() and len(read_for(cap, 0.7)) >= 5
    finally:
        cap.release()


def test_scripted_stream_death_stops_sending():
    scene = Scene(seed=3)
    scene.stream_dies(1.0)  # for good
    with MjpegServer() as srv:
        srv.add_camera("c", scene, fps=10)
        cap = capture(srv.url("c"), [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 1500])
        assert cap.isOpened()
        frames = read_for(cap, 6.0)
        cap.release()
    assert 3 <= len(frames) <= 16  # about one second's worth, then nothing


def test_file_source_streams_at_its_own_rate(tmp_path):
    clip = write_clip(SCENARIOS["walk_through_gate"](0), tmp_path / "clip.avi", seconds=2.0)
    with MjpegServer() as srv:
        srv.add_file("f", clip, loop=True)
        cap = capture(srv.url("f"))
        assert cap.isOpened()
        frames = read_for(cap, 3.0)  # longer than the clip: it loops
        cap.release()
    assert len(frames) >= 35 and frames[0].shape == (360, 640, 3)


def test_subprocess_cli():
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators.mjpeg", "--scenario", "walk_through_gate", "--port", "0", "--id", "cam01", "--fps", "10"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY cam01 http://127.0.0.1:"), line
        url = line.split()[-1]
        cap = capture(url)
        assert cap.isOpened()
        ok, f = cap.read()
        cap.release()
        assert ok and f.shape == (360, 640, 3)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


async def test_async_start_stop_from_an_event_loop():
    import asyncio

    async with MjpegServer() as srv:
        srv.add_camera("a", SCENARIOS["lights_on"](0), fps=10)
        cap = await asyncio.to_thread(capture, srv.url("a"))
        ok, f = await asyncio.to_thread(cap.read)
        cap.release()
    assert ok and f.shape == (360, 640, 3)
