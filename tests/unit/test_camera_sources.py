"""Frame sources on real files written by OpenCV, and the small parts of the camera runtime.

Sources: a file plays at its own frame rate, loops when asked, and a missing
file, an unsupported scheme, an unreachable host or a corrupt/truncated file
give a SourceError that says what is wrong. Decoding a corrupt file runs in a
spawned child, as the adapter does, so even an abort inside FFmpeg could not
take the test process down.

Runtime parts: the frame queue drops the oldest frame and counts it, the rate
meter measures fps, the outbox spool survives a restart (and a torn last line),
AlertEvents become contract Alerts, feedback statistics count per camera and rule.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from adapters.camera.publisher import Outbox, OutboxEntry, snapshot_name, to_alert
from adapters.camera.sources import FileSource, NetworkSource, open_source, redact, register_source, SOURCES
from adapters.camera.stats import FeedbackStore, format_table, is_false_alarm
from adapters.camera.types import AlertEvent, Detection, SourceError
from adapters.camera.worker import FrameQueue, RateMeter, describe_exit
from dispatch.events import Alert, AlertPhase, CapStatus, IncidentKind


def write_clip(path: Path, frames: int = 20, fps: float = 10.0, size=(160, 120), fourcc: str = "mp4v") -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert w.isOpened(), f"cannot write {path} with {fourcc}"
    for i in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, :] = (i * 10 % 256, 40, 200)
        cv2.putText(img, str(i), (20, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        w.write(img)
    w.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clips") / "clip.mp4")


# --------------------------------------------------------------------------- files


def test_file_source_plays_at_its_own_frame_rate_with_wall_clock_times(clip):
    src = open_source(str(clip))
    src.open()
    assert src.fps == pytest.approx(10.0)
    t0 = time.monotonic()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    took = time.monotonic() - t0
    src.close()
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(1, 21))
    assert frames[0].image.shape == (120, 160, 3)
    assert 1.7 <= took <= 2.6, f"20 frames at 10 fps took {took:.2f} s"
    assert abs(frames[0].t - (time.time() - took)) < 1.0  # wall clock, for live rules and schedules
    gaps = np.diff([f.t for f in frames])
    assert 0.07 < float(np.median(gaps)) < 0.13


def test_unpaced_file_is_read_fast_and_stamped_with_its_video_position(clip):
    src = open_source(str(clip), pace=False)
    src.open()
    t0 = time.monotonic()
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    assert time.monotonic() - t0 < 1.0
    assert [round(f.t, 3) for f in frames[:3]] == [0.0, 0.1, 0.2]
    assert frames[-1].t == pytest.approx(1.9)


def test_a_looped_file_starts_again_at_its_end_and_keeps_counting(clip):
    src = open_source(str(clip), loop=True, pace=False)
    src.open()
    frames = [src.read() for _ in range(45)]
    src.close()
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(1, 46))  # unique across passes
    assert frames[20].t == 0.0 and frames[40].t == 0.0  # the video position starts again
    # the same picture at the same position of each pass
    assert np.array_equal(frames[0].image, frames[20].image)
    assert np.array_equal(frames[3].image, frames[23].image)


def test_relative_file_paths_resolve_against_the_base_dir(clip):
    src = open_source(clip.name, base_dir=clip.parent)
    src.open()
    assert src.read() is not None
    src.close()


@pytest.mark.parametrize(
    "url, words",
    [
        ("/no/such/clip.mp4", "cannot open /no/such/clip.mp4: no such file"),
        ("ftp://cam.example/x", "scheme 'ftp' is not supported"),
        ("gopher://x", "use http://, https://, rtsp://, rtsps://, a file path or device:N"),
        ("device:abc", "device:N needs a device number"),
    ],
)
def test_bad_sources_give_a_clear_error(url, words):
    with pytest.raises(SourceError) as e:
        open_source(url).open()
    assert words in str(e.value)


def test_an_empty_and_a_garbage_file_are_refused_by_name(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(1).bytes(50_000))
    with pytest.raises(SourceError, match="the file is empty"):
        open_source(str(empty)).open()
    with pytest.raises(SourceError, match=r"cannot open .*garbage.mp4: not a video file OpenCV can decode"):
        open_source(str(garbage)).open()
    with pytest.raises(SourceError, match="not a file"):
        open_source(str(tmp_path)).open()


def test_a_looped_file_without_a_decodable_frame_does_not_spin(tmp_path, clip):
    # a file whose header opens but whose frames do not decode
    bad = tmp_path / "headonly.avi"
    write_clip(tmp_path / "ok.avi", frames=10, fourcc="MJPG")
    data = (tmp_path / "ok.avi").read_bytes()
    bad.write_bytes(data[:4096])
    src = FileSource(str(bad), loop=True, pace=False)
    try:
        src.open()
    except SourceError:
        return  # refused at open: fine
    with pytest.raises(SourceError):
        for _ in range(5):
            src.read()


# --------------------------------------------------------------------------- network


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_network_failures_are_named(monkeypatch):
    port = _free_port()
    with pytest.raises(SourceError, match=rf"cannot open rtsp://127.0.0.1:{port}/cam: connection refused"):
        open_source(f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=1).open()
    with pytest.raises(SourceError, match="unknown host 'no-such-camera.invalid'"):
        open_source("http://no-such-camera.invalid/stream.mjpg", open_timeout_s=1).open()


def test_an_open_that_hangs_times_out_with_the_timeout_in_the_message():
    # a server that accepts the connection and then says nothing
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    port = srv.getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(SourceError) as e:
            open_source(f"http://127.0.0.1:{port}/silent.mjpg", open_timeout_s=1, read_timeout_s=1).open()
        took = time.monotonic() - t0
    finally:
        srv.close()
    assert f"cannot open http://127.0.0.1:{port}/silent.mjpg: timed out after 1 s" in str(e.value)
    assert took < 4.0


def test_passwords_never_appear_in_messages():
    assert redact("rtsp://admin:hunter2@10.0.0.7:554/sub") == "rtsp://admin:***@10.0.0.7:554/sub"
    src = NetworkSource(f"rtsp://admin:hunter2@127.0.0.1:{_free_port()}/sub", open_timeout_s=1)
    with pytest.raises(SourceError) as e:
        src.open()
    assert "hunter2" not in str(e.value) and "admin:***@" in str(e.value)


def test_the_registry_is_explicit_and_extensible():
    assert set(SOURCES) >= {"rtsp", "rtsps", "http", "https", "device", "file"}

    class Fake:
        def __init__(self, url, **kw):
            self.url, self.fps, self.kw = url, 5.0, kw

    register_source("scene", Fake)
    try:
        src = open_source("scene://walk-in", loop=True)
        assert isinstance(src, Fake) and src.kw["loop"] is True
    finally:
        SOURCES.pop("scene")


# --------------------------------------------------------------------------- corrupt files in a child process


def _read_in_child(url: str, out) -> None:  # runs in a spawned child
    try:
        src = open_source(url, pace=False)
        src.open()
        n = 0
        while src.read() is not None and n < 10_000:
            n += 1
        out.send(("frames", n))
    except SourceError as e:
        out.send(("error", str(e)))
    out.close()


def _corrupt_variants(tmp_path: Path) -> dict[str, Path]:
    good = write_clip(tmp_path / "good.avi", frames=30, fourcc="MJPG")
    data = bytearray(good.read_bytes())
    rng = np.random.default_rng(7)
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(bytes(data[: len(data) // 2]))
    scrambled = bytearray(data)
    mid = len(scrambled) // 3
    scrambled[mid : mid + 4000] = rng.bytes(4000)
    (tmp_path / "scrambled.avi").write_bytes(bytes(scrambled))
    mp4 = write_clip(tmp_path / "good.mp4", frames=30)
    (tmp_path / "truncated.mp4").write_bytes(mp4.read_bytes()[: mp4.stat().st_size // 2])
    return {
        "truncated.avi": truncated,
        "scrambled.avi": tmp_path / "scrambled.avi",
        "truncated.mp4": tmp_path / "truncated.mp4",
    }


def test_corrupt_and_truncated_files_fail_cleanly_in_a_child_process(tmp_path):
    ctx = mp.get_context("spawn")
    results = {}
    for name, path in _corrupt_variants(tmp_path).items():
        r, w = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_read_in_child, args=(str(path), w), daemon=True)
        p.start()
        w.close()
        got = r.recv() if r.poll(30) else ("nothing", None)
        p.join(10)
        results[name] = (p.exitcode, got)
    # the test process is alive; each child ended on its own and said what happened
    for name, (code, got) in results.items():
        assert code == 0, f"{name}: child {describe_exit(code)}"
        assert got[0] in ("frames", "error"), (name, got)
    assert results["truncated.avi"][1][0] == "frames" and 0 < results["truncated.avi"][1][1] < 30
    assert results["truncated.mp4"][1] == ("error", f"cannot open {tmp_path / 'truncated.mp4'}: not a video file OpenCV can decode (corrupt or unknown format)")


# --------------------------------------------------------------------------- worker parts


def test_frame_queue_drops_the_oldest_and_counts():
    q = FrameQueue(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3
    assert [q.get(0), q.get(0)] == [3, 4]
    with pytest.raises(Exception):
        q.get(0.01)


def test_rate_meter_measures_fps():
    m = RateMeter(3.0)
    for i in range(31):
        m.tick(100.0 + i * 0.1)
    assert m.rate(103.0) == pytest.approx(10.0, rel=0.05)
    assert m.rate(110.0) == 0.0  # nothing in the window any more


def test_exit_codes_in_words():
    assert "SIGABRT" in describe_exit(-6) and "decoder" in describe_exit(-6)
    assert describe_exit(1) == "exited with code 1"


# --------------------------------------------------------------------------- outbox


def _alert(phase: str = "new", eid: str = "ev1") -> Alert:
    return Alert(event_id=eid, phase=AlertPhase(phase), source="camera", kind=IncidentKind.intrusion, camera="cam1")


def test_outbox_spool_keeps_what_was_not_acknowledged(tmp_path):
    path = tmp_path / "outbox.jsonl"
    ob = Outbox(path)
    a1, a2, a3 = _alert("new"), _alert("update"), _alert("end")
    ob.add(OutboxEntry.for_alert(a1, "alerts.camera.cam1", ("cam1/ev1.jpg", b"\xff\xd8jpeg")))
    ob.add(OutboxEntry.for_alert(a2, "alerts.camera.cam1"))
    ob.add(OutboxEntry.for_alert(a3, "alerts.camera.cam1"))
    ob.ack(a1.id)
    ob.close()
    with open(path, "a") as f:
        f.write('{"op":"add","id":"torn"')  # a crash mid-write
    again = Outbox(path)
    assert again.recovered == 2
    assert [e.id for e in again] == [a2.id, a3.id]
    assert json.loads(again.head().data)["phase"] == "update"
    again.ack(a2.id)
    again.ack(a3.id)
    assert len(again) == 0 and path.stat().st_size == 0  # empty outbox: empty spool
    again.close()
    assert Outbox(path).recovered == 0


def test_outbox_keeps_snapshots_across_a_restart(tmp_path):
    ob = Outbox(tmp_path / "o.jsonl")
    a = _alert()
    ob.add(OutboxEntry.for_alert(a, "s", ("cam1/ev1.jpg", b"\xff\xd8\xff" + bytes(range(256)))))
    ob.close()
    [e] = list(Outbox(tmp_path / "o.jsonl"))
    assert e.snapshot_name == "cam1/ev1.jpg" and e.snapshot.endswith(bytes(range(256)))


# --------------------------------------------------------------------------- conversion


def _camera():
    from district_fixtures import make_district

    return make_district().cameras[0], make_district().policy


def test_alert_event_to_contract_alert():
    cam, policy = _camera()
    t0 = 1_760_000_000.0
    ev = AlertEvent(
        phase="end", event_id="e42", kind="intrusion", priority=np.int64(1), t=t0 + 9, start_t=t0, end_t=t0 + 9,
        zones=("gate",), label="person", score=np.float32(0.91), box=(np.int32(10), 20, 30.4, 80),
        boxes=(Detection("person", 0.91, (10, 20, 30, 80)), Detection("vehicle", 1.2, (0, 0, 5, 5))),
        frame_size=(640, 360),
    )
    a = to_alert(ev, cam, policy=policy, snapshot=snapshot_name(cam.id, "e42"))
    assert a.phase is AlertPhase.end and a.event_id == "e42" and a.camera == cam.id and a.source.value == "camera"
    assert a.priority == 1 and a.severity.value == "Severe" and a.category.value == "Security"
    assert a.box == (10, 20, 30, 80) and a.score == pytest.approx(0.91, abs=1e-6)
    assert [d.score for d in a.detections] == [pytest.approx(0.91, abs=1e-6), 1.0]  # clamped
    assert a.start_time.timestamp() == t0 and a.end_time.timestamp() == t0 + 9 and a.start_time.tzinfo is not None
    assert a.snapshot == f"{cam.id}/e42.jpg" and a.frame_size == (640, 360)
    assert a.area is not None and a.area.lat == cam.position.lat
    drill = to_alert(AlertEvent(phase="new", event_id="e1", kind="something-new", priority=2, t=t0, start_t=t0), cam,
                     exercise="drill-7")
    assert drill.kind is IncidentKind.other and drill.status is CapStatus.Exercise and drill.end_time is None


# --------------------------------------------------------------------------- feedback statistics


def test_feedback_statistics_per_camera_and_rule(tmp_path):
    st = FeedbackStore.in_dir(tmp_path)
    st.record_alert("e1", "m1", "cam1", "intrusion", "new")
    st.record_alert("e1", "m1b", "cam1", "intrusion", "update")
    st.record_alert("e2", "m2", "cam1", "intrusion", "new")
    st.record_alert("e3", "m3", "cam2", "loitering", "new")
    assert st.verdict("e1", "confirmed")
    assert st.verdict("e2", "confirmed")
    assert st.verdict("e2", "dismissed", "tree shadow")  # the latest verdict wins
    assert not st.verdict("unknown", "dismissed")
    assert st.dismiss_incident("inc9", ("m3",), "cam2", "loitering", "false alarm") == 1
    rows = {(r.camera, r.rule): (r.alerts, r.confirmed, r.dismissed) for r in st.table()}
    assert rows == {("cam1", "intrusion"): (2, 1, 1), ("cam2", "loitering"): (1, 0, 1)}
    text = format_table(st.table())
    assert "dismissed%" in text and "cam1" in text and "50%" in text and "total" in text
    st.close()
    assert is_false_alarm("False alarm: cat") and is_false_alarm("false_alarm") and is_false_alarm("误报")
    assert not is_false_alarm("cleared, suspect gone") and not is_false_alarm(None)
