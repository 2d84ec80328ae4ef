"""Live camera video for the console: one decode per camera, shared by every viewer, over WebRTC.

    feeds = FeedHub(district, loop)                 # one CameraFeed per camera, started on demand
    answer = await webrtc.answer(camera_id, offer)  # a viewer: SDP offer in, SDP answer out
    jpeg = await feeds.get("cam01").snapshot_jpeg() # a still, for tiles that cannot do WebRTC

A `CameraFeed` runs ONE reader thread per camera (PyAV: `av.open(url)`, FFmpeg's demuxers for
MJPEG over HTTP, RTSP, files) that decodes each frame once, converts it once to yuv420p (what the
VP8/H264 encoders want, so they do not convert it again per viewer) and keeps the latest frame.
Every viewer gets its own `ViewerTrack` (an aiortc MediaStreamTrack) that hands its peer
connection the newest frame it has not sent yet: a slow viewer skips frames, it never queues them
and never slows the others. This is aiortc's MediaRelay (unbuffered) with a life cycle of our own:
the reader starts with the first viewer (or snapshot request) and stops `idle_stop_s` after the
last one left.

Encoding (`encode=`):

* "shared" (default): the reader thread also encodes each frame ONCE to VP8 (libvpx, realtime,
  CBR, a keyframe every 2 s and whenever a new viewer joins) and every viewer's track hands its
  peer connection those packets (aiortc packetizes an `av.Packet` without encoding it again).
  An extra viewer costs RTP packetization, SRTP and UDP only. A viewer that falls more than
  `PACKET_RING` packets behind skips to the next keyframe (and asks for one).
* "per-viewer": every viewer's peer connection encodes the shared decoded frames itself
  (aiortc's own encoders, with per-viewer bandwidth estimation; VP8 or H264).

ICE: peer connections are created with NO ICE servers (aiortc otherwise asks a public STUN server),
and the host addresses offered are `ice_hosts` (for a console bound to 127.0.0.1: only
127.0.0.1, which aioice never offers by itself: it skips loopback addresses). When every host
address is a loopback address, the browser's non-loopback candidates are dropped from its offer,
so no packet leaves the machine.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections import deque
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("console.video")

VIDEO_CLOCK = 90_000
TIME_BASE = Fraction(1, VIDEO_CLOCK)
PACKET_RING = 45  # encoded packets kept for viewers that lag (3 s at 15 fps)
KEYFRAME_EVERY_S = 2.0


# --------------------------------------------------------------------------- ICE host addresses

_ice_hosts: list[str] | None = None
_patched = False


def set_ice_hosts(hosts: Sequence[str] | None) -> None:
    """Host candidate addresses every peer connection of this process offers (None: aioice's own
    choice, the machine's non-loopback addresses). aioice reads its `get_host_addresses` at
    gathering time, so replacing it once is enough."""
    global _ice_hosts, _patched
    _ice_hosts = list(hosts) if hosts else None
    if not _patched:
        import aioice.ice

        original = aioice.ice.get_host_addresses

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            if _ice_hosts is None:
                return original(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
            out = []
            for h in _ice_hosts:
                v6 = ":" in h
                if (v6 and use_ipv6) or (not v6 and use_ipv4):
                    out.append(h)
            return out

        aioice.ice.get_host_addresses = get_host_addresses
        _patched = True


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def loopback_only(hosts: Sequence[str] | None) -> bool:
    return bool(hosts) and all(_is_loopback(h) for h in hosts or ())


def keep_loopback_candidates(sdp: str) -> str:
    """Drop every ICE candidate line whose address is not a loopback address."""
    out = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) > 5 and not _is_loopback(parts[4]):
                continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


# --------------------------------------------------------------------------- one camera, one decode


class FeedError(RuntimeError):
    """The camera's stream is broken; the message says why, for a person."""


class CameraFeed:
    """One reader per camera stream; the latest decoded frame is shared by all viewers."""

    def __init__(
        self,
        camera_id: str,
        url: str,
        *,
        loop_file: bool = False,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        idle_stop_s: float = 10.0,
        max_fps: float = 15.0,
        encode: str = "shared",
        bitrate: int | None = None,
    ) -> None:
        if encode not in ("shared", "per-viewer"):
            raise ValueError("encode is 'shared' or 'per-viewer'")
        self.camera_id = camera_id
        self.encode = encode
        self.bitrate = bitrate
        self.url = url
        self.loop_file = loop_file
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.idle_stop_s = idle_stop_s
        self.min_interval = 1.0 / max_fps if max_fps > 0 else 0.0
        self.viewers = 0
        self.state = "idle"  # idle | connecting | live | error
        self.error = ""
        self.decoded = 0  # frames decoded since this process started (one per source frame, whatever the viewers)
        self.seq = 0
        self.frame: Any = None  # av.VideoFrame, yuv420p
        self.frame_wall = 0.0
        self.width = 0
        self.height = 0
        self._t0 = time.monotonic()
        self._last_use = time.monotonic()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cond: asyncio.Condition | None = None
        self._jpeg: tuple[int, bytes] | None = None
        # shared encoding
        self.packets: deque[tuple[int, Any, bool]] = deque(maxlen=PACKET_RING)  # (pseq, av.Packet, keyframe)
        self.pseq = 0
        self.encoded = 0
        self._codec: Any = None
        self._want_key = True
        self._last_key = 0.0

    # -- life cycle
    def _ensure_running(self) -> None:
        self._last_use = time.monotonic()
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._cond = asyncio.Condition()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self.state = "connecting"
        self._thread = threading.Thread(target=self._run, name=f"feed-{self.camera_id}", daemon=True)
        self._thread.start()

    def acquire(self) -> None:
        self.viewers += 1
        self._ensure_running()

    def release(self) -> None:
        self.viewers = max(0, self.viewers - 1)
        self._last_use = time.monotonic()

    def touch(self) -> None:
        """A snapshot was asked for: run (or keep running) the reader for `idle_stop_s` more."""
        self._ensure_running()

    def idle_check(self) -> None:
        if self._thread is not None and self.viewers == 0 and time.monotonic() - self._last_use > self.idle_stop_s:
            self.stop()

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=0.1)  # the thread notices within one read timeout; never block the loop long
        self.state = "idle"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the reader thread
    def _run(self) -> None:
        import av

        backoff = 0.5
        while not self._stop.is_set():
            container = None
            try:
                options = {"rtsp_transport": "tcp"} if self.url.startswith(("rtsp://", "rtsps://")) else {}
                src = self.url
                if not src.startswith(("rtsp://", "rtsps://", "http://", "https://")) and not Path(src).exists():
                    raise FileNotFoundError(f"no such video file {src}")
                container = av.open(src, options=options, timeout=(self.open_timeout_s, self.read_timeout_s))
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                is_file = not src.startswith(("rtsp://", "rtsps://", "http://", "https://"))
                file_fps = float(stream.average_rate or 15) if is_file else 0.0
                last = 0.0
                for frame in container.decode(stream):
                    if self._stop.is_set():
                        break
                    now = time.monotonic()
                    if is_file:  # play a file at its own rate
                        wait = last + 1.0 / file_fps - now
                        if wait > 0:
                            time.sleep(wait)
                            now = time.monotonic()
                    elif self.min_interval and now - last < self.min_interval * 0.8:
                        continue  # a source faster than max_fps: skip, do not convert
                    last = now
                    self.decoded += 1
                    out = frame if frame.format.name == "yuv420p" else frame.reformat(format="yuv420p")
                    out.pts = int((now - self._t0) * VIDEO_CLOCK)
                    out.time_base = TIME_BASE
                    with self._lock:
                        self.frame = out
                        self.seq += 1
                        self.frame_wall = time.time()
                        self.width, self.height = out.width, out.height
                    if self.encode == "shared" and self.viewers > 0:
                        self._encode(out, now)
                    if self.state != "live":
                        self.state, self.error = "live", ""
                        log.info("camera feed live", camera=self.camera_id, size=f"{out.width}x{out.height}")
                    backoff = 0.5
                    self._notify()
                else:
                    if is_file and self.loop_file and not self._stop.is_set():
                        continue
                    raise EOFError("the stream ended")
            except Exception as e:  # a broken stream is retried; the viewers see the reason on the tile
                if self._stop.is_set():
                    break
                self.state, self.error = "error", _why(e)
                log.info("camera feed broken", camera=self.camera_id, error=self.error, retry_s=backoff)
                self._notify()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if container is not None:
                    try:
                        container.close()
                    except Exception:
                        pass
                self._codec = None  # a new stream may have another size: start a new encoder
                self._want_key = True
        self.state = "idle"

    def _encode(self, frame: Any, now: float) -> None:
        """Encode one frame to VP8 for every viewer (reader thread)."""
        import av

        if self._codec is not None and (frame.width != self._codec.width or frame.height != self._codec.height):
            self._codec = None
        if self._codec is None:
            rate = self.bitrate or max(150_000, min(2_500_000, int(frame.width * frame.height * 2.6)))  # ~600 kb/s at 640x360
            c = av.CodecContext.create("libvpx", "w")
            c.width, c.height, c.pix_fmt = frame.width, frame.height, "yuv420p"
            c.time_base = TIME_BASE
            c.bit_rate = rate
            c.gop_size = 10_000  # keyframes on our schedule (below), not the codec's
            c.qmin, c.qmax = 2, 56
            c.options = {
                "bufsize": str(rate), "cpu-used": "-6", "deadline": "realtime", "lag-in-frames": "0",
                "minrate": str(rate), "maxrate": str(rate), "noise-sensitivity": "4", "overshoot-pct": "15",
                "partitions": "0", "static-thresh": "1", "undershoot-pct": "100",
            }
            c.thread_count = 1  # libvpx threads cost far more than they save at this size (measured: 80 vs 2.3 ms a frame)
            self._codec = c
            self._want_key = True
        key = self._want_key or now - self._last_key >= KEYFRAME_EVERY_S
        frame.pict_type = av.video.frame.PictureType.I if key else av.video.frame.PictureType.NONE
        if key:
            self._want_key = False
            self._last_key = now
        data = b"".join(bytes(p) for p in self._codec.encode(frame))
        if not data:
            return
        pkt = av.Packet(data)
        pkt.pts = frame.pts
        pkt.time_base = TIME_BASE
        with self._lock:
            self.pseq += 1
            self.packets.append((self.pseq, pkt, key))
            self.encoded += 1

    def request_keyframe(self) -> None:
        self._want_key = True

    def _notify(self) -> None:
        loop, cond = self._loop, self._cond
        if loop is None or cond is None or loop.is_closed():
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        try:
            asyncio.run_coroutine_threadsafe(wake(), loop)
        except RuntimeError:  # loop closing
            pass

    # -- consumers
    async def next_frame(self, after_seq: int, timeout: float | None = None) -> tuple[int, Any]:
        """The newest frame whose sequence number is above `after_seq` (waits for one)."""
        self._ensure_running()
        assert self._cond is not None

        async def wait() -> tuple[int, Any]:
            async with self._cond:
                while self.seq <= after_seq or self.frame is None:
                    await self._cond.wait()
                return self.seq, self.frame

        if timeout is None:
            return await wait()
        return await asyncio.wait_for(wait(), timeout)

    async def next_packet(self, after_pseq: int, need_key: bool) -> tuple[int, Any, bool]:
        """The encoded packet after `after_pseq`; a viewer that needs a keyframe (new, or too far
        behind) gets the next keyframe. Returns (pseq, packet, keyframe)."""
        self._ensure_running()
        assert self._cond is not None
        if need_key:
            after_pseq = max(after_pseq, self.pseq)  # a keyframe made from now on, not an old one
            self.request_keyframe()
        async with self._cond:
            while True:
                with self._lock:
                    ring = list(self.packets)
                if ring:
                    if need_key:
                        for pseq, pkt, key in ring:
                            if key and pseq > after_pseq:
                                return pseq, pkt, key
                    else:
                        first = ring[0][0]
                        if after_pseq + 1 < first:  # fell behind the ring: wait for a new keyframe
                            need_key = True
                            after_pseq = max(after_pseq, self.pseq)
                            self.request_keyframe()
                            continue
                        for pseq, pkt, key in ring:
                            if pseq == after_pseq + 1:
                                return pseq, pkt, key
                await self._cond.wait()

    async def snapshot_jpeg(self, timeout: float = 4.0, quality: int = 80) -> bytes:
        """The latest frame as JPEG (encoded once per frame whatever the number of callers).
        Raises FeedError at once when the stream is known to be broken, TimeoutError after `timeout`."""
        self.touch()
        if self.frame is None or time.time() - self.frame_wall > 2.0:
            if self.state == "error":
                raise FeedError(self.error)
            assert self._cond is not None
            after = self.seq if self.frame is not None else 0

            async def wait() -> None:
                async with self._cond:  # type: ignore[union-attr]
                    while self.seq <= after or self.frame is None:
                        if self.state == "error":
                            raise FeedError(self.error)
                        await self._cond.wait()  # type: ignore[union-attr]

            await asyncio.wait_for(wait(), timeout)
        with self._lock:
            seq, frame = self.seq, self.frame
        if self._jpeg is not None and self._jpeg[0] == seq:
            return self._jpeg[1]
        data = await asyncio.get_running_loop().run_in_executor(None, _to_jpeg, frame, quality)
        self._jpeg = (seq, data)
        return data

    def status(self) -> dict[str, Any]:
        return {
            "camera": self.camera_id, "state": self.state, "error": self.error, "viewers": self.viewers,
            "decoded": self.decoded, "encoded": self.encoded, "encode": self.encode, "width": self.width, "height": self.height,
            "age_s": round(time.time() - self.frame_wall, 1) if self.frame_wall else None,
        }


def _why(e: Exception) -> str:
    """A camera stream failure in words an operator reads on a small tile."""
    text = str(e)
    if isinstance(e, ConnectionRefusedError) or "refused" in text.lower():
        return "the camera refuses the connection"
    if isinstance(e, (TimeoutError,)) or "timed out" in text.lower() or "timeout" in text.lower():
        return "the camera does not answer (timed out)"
    if isinstance(e, EOFError):
        return "the stream ended"
    if isinstance(e, FileNotFoundError):
        return "no such video file"
    if "403" in text or "401" in text:
        return "the camera refused our credentials"
    if "404" in text:
        return "no such stream on the camera"
    return f"{type(e).__name__}: {text}"[:160]


def _to_jpeg(frame: Any, quality: int) -> bytes:
    import cv2

    img = frame.to_ndarray(format="bgr24")
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


class ViewerTrack:
    """Factory for a per-viewer aiortc track over a shared CameraFeed (defined lazily: aiortc import)."""

    @staticmethod
    def make(feed: CameraFeed) -> Any:
        from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

        class _Track(MediaStreamTrack):
            kind = "video"

            def __init__(self) -> None:
                super().__init__()
                self.feed = feed
                self.last_seq = 0
                self.sent = 0
                self.need_key = True
                feed.acquire()
                self._released = False

            async def recv(self) -> Any:
                if self.readyState != "live":
                    raise MediaStreamError
                if self.feed.encode == "shared":
                    pseq, pkt, key = await self.feed.next_packet(self.last_seq, need_key=self.need_key)
                    self.need_key = False
                    self.last_seq = pseq
                    self.sent += 1
                    return pkt
                seq, frame = await self.feed.next_frame(self.last_seq)
                self.last_seq = seq
                self.sent += 1
                return frame

            def stop(self) -> None:
                if not self._released:
                    self._released = True
                    self.feed.release()
                super().stop()

        return _Track()


# --------------------------------------------------------------------------- all cameras, all viewers


class FeedHub:
    """The district's camera feeds and the WebRTC peer connections of every viewer."""

    def __init__(self, district: Any, ice_hosts: Sequence[str] | None = None, idle_stop_s: float = 10.0,
                 stream_urls: dict[str, str] | None = None, encode: str = "shared") -> None:
        self.encode = encode
        self.district = district
        self.ice_hosts = list(ice_hosts) if ice_hosts else None
        self.feeds: dict[str, CameraFeed] = {}
        overrides = stream_urls or {}
        for cam in district.cameras:
            url = overrides.get(cam.id, cam.stream)
            if not url.startswith(("rtsp://", "rtsps://", "http://", "https://", "device:")):
                url = str((district.base_dir / url).resolve()) if not Path(url).is_absolute() else url
            self.feeds[cam.id] = CameraFeed(cam.id, url, loop_file=cam.loop, idle_stop_s=idle_stop_s, encode=encode)
        self.pcs: dict[str, tuple[Any, Any, str]] = {}  # peer id -> (pc, track, camera)
        self.owners: dict[str, str] = {}  # peer id -> user name
        self._task: asyncio.Task[None] | None = None
        set_ice_hosts(self.ice_hosts)

    def get(self, camera_id: str) -> CameraFeed | None:
        return self.feeds.get(camera_id)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._housekeeping())

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for f in self.feeds.values():
                f.idle_check()

    async def answer(self, camera_id: str, offer_sdp: str, offer_type: str = "offer", who: str = "") -> dict[str, str]:
        """Accept a viewer's offer (recvonly video) and answer with the camera's track."""
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        feed = self.feeds[camera_id]
        if loopback_only(self.ice_hosts):
            offer_sdp = keep_loopback_candidates(offer_sdp)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        track = ViewerTrack.make(feed)
        peer_id = f"{camera_id}-{secrets.token_hex(8)}"
        self.pcs[peer_id] = (pc, track, camera_id)
        self.owners[peer_id] = who

        @pc.on("connectionstatechange")
        async def _state() -> None:
            log.info("viewer connection", camera=camera_id, peer=peer_id, state=pc.connectionState, who=who)
            if pc.connectionState in ("failed", "closed"):
                await self.close_peer(peer_id)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type=offer_type))
            video = [t for t in pc.getTransceivers() if t.kind == "video"]
            if not video:
                raise ValueError("the offer has no video transceiver")
            pc.addTrack(track)
            if feed.encode == "shared":  # the shared packets are VP8: negotiate nothing else
                from aiortc import RTCRtpSender

                caps = RTCRtpSender.getCapabilities("video").codecs
                vp8 = [c for c in caps if c.mimeType.lower() in ("video/vp8", "video/rtx")]
                video[0].setCodecPreferences(vp8)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception:
            await self.close_peer(peer_id)
            raise
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type, "peer": peer_id}

    def owner(self, peer_id: str) -> str | None:
        return self.owners.get(peer_id)

    async def close_peer(self, peer_id: str) -> None:
        self.owners.pop(peer_id, None)
        item = self.pcs.pop(peer_id, None)
        if item is None:
            return
        pc, track, _ = item
        track.stop()
        try:
            await pc.close()
        except Exception:
            pass

    def viewers(self, camera_id: str) -> int:
        return sum(1 for _, _, c in self.pcs.values() if c == camera_id)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        for pid in list(self.pcs):
            await self.close_peer(pid)
        for f in self.feeds.values():
            f.stop()

    def status(self) -> dict[str, Any]:
        return {cid: {**f.status(), "peers": self.viewers(cid)} for cid, f in self.feeds.items()}
