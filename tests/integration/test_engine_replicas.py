"""Engine processes over a real nats-server: two replicas competing, and a kill -9.

Acceptance (issue 2):
* two engine replicas on one server, 1,000 alerts raised at once against 200
  units: no unit ever holds two orders at a time, and every alert belongs to
  exactly one incident;
* `kill -9` of the engine in the middle of incidents, then a restart: no
  incident lost, no order sent twice, pending timeouts still fire.

Each engine is a real `python -m dispatch.cli engine` child process; the test
plays the units (positions, acknowledgements, clearing) over the public event
contract and checks the durable record afterwards: the RADIO and INCIDENTS
streams read from the start, and the key-value buckets.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from nats.js.api import DeliverPolicy

from dispatch.district import District, load_district
from dispatch.events import (
    Alert,
    AlertSource,
    Area,
    IncidentKind,
    OrderReply,
    ReplyKind,
    UnitPosition,
    encode,
    new_id,
)
from dispatch.subjects import Subjects

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
TIESHAN = REPO_ROOT / "config" / "districts" / "tieshan.yaml"

# kinds that police and auxiliaries may both take (no volunteers in these districts)
KINDS = [
    IncidentKind.assault, IncidentKind.robbery, IncidentKind.fight, IncidentKind.intrusion,
    IncidentKind.theft, IncidentKind.vandalism, IncidentKind.loitering, IncidentKind.crowd,
    IncidentKind.suspicious, IncidentKind.traffic, IncidentKind.medical, IncidentKind.other,
]
# events that end the order an incident holds (the unit is no longer ordered to it)
ORDER_ENDS = {"timed_out", "declined", "resolved", "preempted", "requeued", "cancelled"}


# --------------------------------------------------------------------------- district


def write_district(
    path: Path, n_units: int, policy: dict[str, Any] | None = None, seed: int = 7
) -> tuple[District, list[tuple[str, float, float]]]:
    """A district YAML with `n_units` police/auxiliary units; returns it loaded and a place for each unit.

    Uses the sample district's communities and streets when they exist, else a
    self-contained grid of communities without streets (straight-line routing).
    """
    rng = random.Random(seed)
    if TIESHAN.exists():
        base = yaml.safe_load(TIESHAN.read_text())
        if base.get("streets"):
            base["streets"]["file"] = str((TIESHAN.parent / base["streets"]["file"]).resolve())
        base["cameras"] = []
    else:
        lat0, lon0, step = 30.20, 114.90, 0.006
        base = {
            "name": "Gridtown",
            "timezone": "Asia/Shanghai",
            "center": {"lat": lat0 + step, "lon": lon0 + 1.5 * step},
            "communities": [
                {
                    "id": f"c{i}{j}",
                    "name": f"Block {i}{j}",
                    "boundary": [
                        [lat0 + i * step, lon0 + j * step], [lat0 + (i + 1) * step, lon0 + j * step],
                        [lat0 + (i + 1) * step, lon0 + (j + 1) * step], [lat0 + i * step, lon0 + (j + 1) * step],
                    ],
                }
                for i in range(2)
                for j in range(3)
            ],
        }
    communities = [c["id"] for c in base["communities"]]
    base["units"] = [
        {
            "id": f"u{i:04d}",
            "callsign": f"Unit {i}",
            "kind": "police" if i % 3 == 0 else "auxiliary",
            "mode": ("car", "motorbike", "bicycle", "foot")[i % 4],
            "beat": communities[i % len(communities)],
            "talkgroup": "police" if i % 3 == 0 else "auxiliary",
        }
        for i in range(n_units)
    ]
    base["policy"] = {**base.get("policy", {}), **(policy or {})}
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    district = load_district(path)
    places = random_places(district, n_units, rng)
    return district, [(u.id, lat, lon) for u, (lat, lon) in zip(district.units, places)]


def random_places(district: District, n: int, rng: random.Random) -> list[tuple[float, float]]:
    """Points inside the district's communities (near streets when there are streets)."""
    graph = district.load_streets()
    lat_lo, lon_lo, lat_hi, lon_hi = district.bbox
    out: list[tuple[float, float]] = []
    while len(out) < n:
        if graph is not None:
            lat, lon = graph.coords(rng.randrange(graph.node_count))
            lat += rng.uniform(-0.0003, 0.0003)
            lon += rng.uniform(-0.0003, 0.0003)
        else:
            lat, lon = rng.uniform(lat_lo, lat_hi), rng.uniform(lon_lo, lon_hi)
        if district.community_at(lat, lon) is not None:
            out.append((lat, lon))
    return out


# --------------------------------------------------------------------------- engine processes


class EngineProc:
    """One `patrollink engine` child process, its stdout and stderr (JSON log lines) in files."""

    def __init__(self, district_file: Path, url: str, prefix: str, name: str, workdir: Path) -> None:
        self.name = name
        self.cmd = [
            sys.executable, "-m", "dispatch.cli", "engine",
            "--district", str(district_file), "--nats", url, "--prefix", prefix, "--name", name,
            "--state-dir", str(workdir / f"state-{name}"),
        ]
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = 0

    @property
    def err_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.generation}.stderr"

    @property
    def out_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.generation}.stdout"

    def start(self) -> "EngineProc":
        self.generation += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        return self

    def log_lines(self, generation: int | None = None) -> list[dict[str, Any]]:
        path = self.workdir / f"{self.name}.{generation or self.generation}.stderr"
        out = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def log_text(self, generation: int | None = None) -> str:
        path = self.workdir / f"{self.name}.{generation or self.generation}.stderr"
        return path.read_text(errors="replace")

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"engine {self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if '"engine ready"' in self.log_text():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"engine {self.name} not ready after {timeout} s:\n{self.log_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


# --------------------------------------------------------------------------- contract helpers


def make_alert(lat: float, lon: float, kind: IncidentKind, priority: int, console: str = "c1") -> Alert:
    return Alert(
        event_id=new_id(), source=AlertSource.operator, kind=kind, priority=priority,
        area=Area(lat=lat, lon=lon), console=console, operator="test",
    )


def reply_bytes(order: dict[str, Any], kind: ReplyKind) -> tuple[str, bytes]:
    r = OrderReply(order_id=order["order_id"], incident_id=order["incident_id"], unit=order["unit"], reply=kind)
    return r.id, encode(r)


async def publish_positions(nc: Any, s: Subjects, places: list[tuple[str, float, float]]) -> None:
    for uid, lat, lon in places:
        await nc.publish(s.unit_position(uid), encode(UnitPosition(unit=uid, lat=lat, lon=lon, accuracy_m=5.0)))
    await nc.flush()


async def wait_units_placed(js: Any, s: Subjects, n: int, timeout: float = 30.0) -> None:
    """Until the state bucket holds a position for `n` units (the engine stored every report)."""
    deadline = time.monotonic() + timeout
    placed = 0
    while time.monotonic() < deadline:
        placed = sum(1 for u in (await read_bucket(js, s.bucket_state, s.unit_keys)).values() if u.get("lat") is not None)
        if placed >= n:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {placed} of {n} unit positions reached the state bucket")


async def read_bucket(js: Any, bucket: str, keys: str) -> dict[str, dict[str, Any]]:
    """The records under the key filter `keys` (e.g. `unit.>`), by id: the key without its `unit.` prefix."""
    try:
        kv = await js.key_value(bucket)
    except Exception:
        return {}
    out: dict[str, dict[str, Any]] = {}
    watcher = await kv.watch(keys)
    async for e in watcher:
        if e is None:
            break
        if e.value:
            out[e.key.partition(".")[2]] = json.loads(e.value)
    await watcher.stop()
    return out


async def read_stream(js: Any, stream: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message of a stream, in stream order, as (subject, JSON body)."""
    info = await js.stream_info(stream)
    last = info.state.last_seq
    if info.state.messages == 0:
        return []
    got: list[tuple[str, dict[str, Any]]] = []
    done = asyncio.Event()

    async def cb(m: Any) -> None:
        got.append((m.subject, json.loads(m.data)))
        if m.metadata.sequence.stream >= last:
            done.set()

    sub = await js.subscribe(
        info.config.subjects[0], cb=cb, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, stream=stream
    )
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await sub.unsubscribe()
    return got


def check_one_order_per_unit(events: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """Replay incident events in decision order: a unit never holds two outstanding orders.

    An order is outstanding from its `assigned` event until an event of the same
    incident ends it (timed out, declined, resolved, pre-empted, re-queued, cancelled).
    Decision order is the events' `time` (the deciding engine's clock), stream order
    breaking ties: two replicas publish independently, so replica B's decision that
    builds on replica A's committed write can reach the stream before A's events do,
    but it always carries a later time (B read A's write after A took its time).
    Returns (number of assignments, violations).
    """
    events = sorted(events, key=lambda e: datetime.fromisoformat(e["time"]))  # stable: ties keep stream order
    holding: dict[str, set[str]] = defaultdict(set)  # unit -> order ids it holds
    current: dict[str, tuple[str, str]] = {}  # incident -> (unit, order id) outstanding
    problems: list[str] = []
    assigned = 0
    for ev in events:
        inc, kind = ev["incident_id"], ev["event"]
        if kind == "assigned":
            assigned += 1
            unit, order = ev["unit"], ev["order_id"]
            if inc in current:
                problems.append(f"incident {inc} got order {order} while order {current[inc][1]} was outstanding")
            if holding[unit]:
                problems.append(
                    f"unit {unit} got order {order} (incident {inc}, seq {ev['seq']}) while holding {sorted(holding[unit])}"
                )
            holding[unit].add(order)
            current[inc] = (unit, order)
        elif kind in ORDER_ENDS and inc in current:
            unit, order = current.pop(inc)
            if ev.get("order_id") not in (None, order):
                problems.append(f"{kind} of incident {inc} names order {ev['order_id']}, outstanding was {order}")
            holding[unit].discard(order)
    return assigned, problems


# --------------------------------------------------------------------------- two replicas


@pytest.mark.timeout(300)
async def test_two_replicas_never_give_one_unit_two_orders_and_every_alert_joins_exactly_one_incident(
    nats_server: Any, fresh_prefix: str, tmp_path: Path
) -> None:
    n_units, n_alerts = 200, 1000
    rng = random.Random(20240605)
    district_file = tmp_path / "district.yaml"
    district, unit_places = write_district(
        district_file, n_units, policy={"ack_timeout_s": {1: 15, 2: 15, 3: 15}, "max_attempts": 50}
    )
    s = Subjects(fresh_prefix)
    engines = [EngineProc(district_file, nats_server.url, fresh_prefix, name, tmp_path) for name in ("r1", "r2")]
    nc = await nats.connect(nats_server.url, connect_timeout=5, name="replica-test")
    try:
        for e in engines:
            e.start()
        for e in engines:
            await e.wait_ready()
        for e in engines:  # each heard the other before taking input: releases are written atomically
            assert "another engine replica is running" in e.log_text(), e.name
        js = nc.jetstream()

        # -- the units: positions now, then answer every order quickly: acknowledge, clear
        await publish_positions(nc, s, unit_places)
        await wait_units_placed(js, s, n_units)
        cancelled: set[str] = set()
        replies: list[asyncio.Task[Any]] = []
        orders_seen = Counter()

        async def answer(order: dict[str, Any]) -> None:
            await asyncio.sleep(rng.uniform(0.0, 0.03))
            for kind in (ReplyKind.ack, ReplyKind.cleared):
                if order["order_id"] in cancelled:
                    return
                msg_id, body = reply_bytes(order, kind)
                await js.publish(s.reply(order["unit"]), body, headers={"Nats-Msg-Id": msg_id})
                await asyncio.sleep(rng.uniform(0.0, 0.02))

        async def on_order(m: Any) -> None:
            order = json.loads(m.data)
            if order["action"] == "cancel":
                cancelled.add(order["order_id"])
                return
            orders_seen[order["order_id"]] += 1
            replies.append(asyncio.create_task(answer(order)))

        await nc.subscribe(s.all_orders, cb=on_order)

        opened: set[str] = set()
        closed: set[str] = set()
        alert_seen: set[str] = set()

        async def on_event(m: Any) -> None:
            ev = json.loads(m.data)
            if ev["event"] == "opened":
                opened.add(ev["incident_id"])
            elif ev["event"] in ("resolved", "cancelled"):
                closed.add(ev["incident_id"])
            alert_seen.update(ev.get("alert_ids", ()))

        await nc.subscribe(s.all_incident_events, cb=on_event)

        # -- a probe: the pair is serving
        probe = make_alert(*unit_places[0][1:], IncidentKind.theft, 2)
        await js.publish(s.operator_alert("probe"), encode(probe), headers={"Nats-Msg-Id": probe.id})
        deadline = time.monotonic() + 15
        while probe.id not in alert_seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert probe.id in alert_seen, "the engines did not answer a probe alert"

        # -- 1,000 alerts at once
        places = random_places(district, n_alerts, rng)
        alerts = [make_alert(lat, lon, rng.choice(KINDS), rng.choice((1, 2, 2, 3, 3))) for lat, lon in places]
        acks = [
            await js.publish_async(s.operator_alert(f"console{i % 6}"), encode(a), headers={"Nats-Msg-Id": a.id})
            for i, a in enumerate(alerts)
        ]
        await asyncio.gather(*acks)
        all_ids = {a.id for a in alerts} | {probe.id}

        # -- until every alert is in an incident and every incident is resolved
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if all_ids <= alert_seen and opened and opened <= closed:
                break
            for e in engines:
                assert e.proc is not None and e.proc.poll() is None, f"engine {e.name} died:\n{e.log_text()[-3000:]}"
            await asyncio.sleep(0.25)
        missing_alerts = len(all_ids - alert_seen)
        still_open = len(opened - closed)
        await asyncio.sleep(0.5)  # last replies land
        await asyncio.gather(*replies, return_exceptions=True)
    finally:
        for e in engines:
            e.stop()
    try:
        # -- the durable record (kept next to the engines' logs for a post-mortem)
        events = [body for subject, body in await read_stream(js, s.stream_incidents)]
        radio = await read_stream(js, s.stream_radio)
        (tmp_path / "incident-events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        (tmp_path / "radio.jsonl").write_text("".join(json.dumps([subj, b]) + "\n" for subj, b in radio))
        (tmp_path / "alert-ids.txt").write_text("\n".join(sorted(all_ids)))
        assert missing_alerts == 0, f"{missing_alerts} alerts never reached an incident"
        assert still_open == 0, f"{still_open} incidents still open after 90 s"

        # no unit ever held two orders at a time
        n_assigned, problems = check_one_order_per_unit(events)
        assert not problems, f"{len(problems)} violations, first ones:\n" + "\n".join(problems[:10])
        assert n_assigned >= len(opened)

        # the radio traffic agrees: every assign order once, each matching one `assigned` event
        assigns = [b for subj, b in radio if subj.endswith(".order") and b["action"] == "assign"]
        per_order = Counter(b["order_id"] for b in assigns)
        assert not [o for o, n in per_order.items() if n > 1], "an assign order was stored twice"
        assigned_events = {(e["order_id"], e["unit"]) for e in events if e["event"] == "assigned"}
        assert {(b["order_id"], b["unit"]) for b in assigns} == assigned_events
        assert not [o for o, n in orders_seen.items() if n > 1], "a unit received one order twice"

        # every alert joined exactly one incident, exactly once
        holders: dict[str, set[str]] = defaultdict(set)
        mentions = Counter()
        for e in events:
            if e["event"] in ("opened", "merged", "upgraded"):
                for aid in e["alert_ids"]:
                    holders[aid].add(e["incident_id"])
                    mentions[aid] += 1
        assert set(holders) == all_ids
        assert [a for a, incs in holders.items() if len(incs) != 1] == []
        assert [a for a, n in mentions.items() if n != 1] == []

        # the buckets agree: every incident closed, every unit free again
        incidents = await read_bucket(js, s.bucket_state, s.incident_keys)
        assert {i for i, r in incidents.items() if r["state"] not in ("resolved", "cancelled")} == set()
        units = await read_bucket(js, s.bucket_state, s.unit_keys)
        busy = {u: (r["state"], r.get("order")) for u, r in units.items() if r["state"] != "available" or r.get("order")}
        assert busy == {}, f"{len(busy)} units were left holding an order: {list(busy.items())[:5]}"

        # both replicas did work
        for e in engines:
            decided = sum(1 for line in e.log_lines() if line.get("event") in ("assigned", "opened", "resolved"))
            assert decided > 0, f"replica {e.name} made no decision"
    finally:
        await nc.close()


# --------------------------------------------------------------------------- kill -9


@pytest.mark.timeout(180)
async def test_kill_9_mid_incidents_loses_nothing_sends_no_order_twice_and_timeouts_still_fire(
    nats_server: Any, fresh_prefix: str, tmp_path: Path
) -> None:
    rng = random.Random(9)
    district_file = tmp_path / "district.yaml"
    district, unit_places = write_district(
        district_file, 12, policy={"ack_timeout_s": {1: 3, 2: 3, 3: 3}, "max_attempts": 10, "preemption": False}
    )
    s = Subjects(fresh_prefix)
    engine = EngineProc(district_file, nats_server.url, fresh_prefix, "solo", tmp_path)
    nc = await nats.connect(nats_server.url, connect_timeout=5, name="kill9-test")
    js = nc.jetstream()
    orders: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    async def on_order(m: Any) -> None:
        orders.append(json.loads(m.data))

    async def on_event(m: Any) -> None:
        events.append(json.loads(m.data))

    async def wait_for(pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{engine.log_text()[-3000:]}")
            await asyncio.sleep(0.02)

    def assigned_to(incident: str) -> list[dict[str, Any]]:
        return [e for e in events if e["incident_id"] == incident and e["event"] == "assigned"]

    try:
        engine.start()
        await engine.wait_ready()
        await nc.subscribe(s.all_orders, cb=on_order)
        await nc.subscribe(s.all_incident_events, cb=on_event)
        await publish_positions(nc, s, unit_places)
        await wait_units_placed(js, s, len(unit_places))

        # -- four incidents far apart; two get acknowledged, two stay pending
        places = random_places(district, 40, rng)
        chosen: list[tuple[float, float]] = []
        for p in places:
            if all(abs(p[0] - q[0]) + abs(p[1] - q[1]) > 0.004 for q in chosen):
                chosen.append(p)
            if len(chosen) == 4:
                break
        assert len(chosen) == 4
        before = [make_alert(lat, lon, IncidentKind.theft, 2) for lat, lon in chosen]
        for a in before:
            await js.publish(s.operator_alert("c1"), encode(a), headers={"Nats-Msg-Id": a.id})
        incident_of: dict[str, str] = {}

        def all_assigned() -> bool:
            for e in events:
                if e["event"] == "opened":
                    for aid in e["alert_ids"]:
                        incident_of[aid] = e["incident_id"]
            return all(a.id in incident_of and assigned_to(incident_of[a.id]) for a in before)

        await wait_for(all_assigned, 5, "orders for the first four alerts")
        incidents_before = [incident_of[a.id] for a in before]
        first_orders = {i: assigned_to(i)[0] for i in incidents_before}
        acked, pending = incidents_before[:2], incidents_before[2:]
        for i in acked:
            o = first_orders[i]
            msg_id, body = reply_bytes(o, ReplyKind.ack)
            await js.publish(s.reply(o["unit"]), body, headers={"Nats-Msg-Id": msg_id})
        await wait_for(
            lambda: all(any(e["incident_id"] == i and e["event"] == "acknowledged" for e in events) for i in acked),
            5, "acknowledgements",
        )
        await asyncio.sleep(0.3)  # let the engine acknowledge its inputs to JetStream

        # -- crash while two orders wait for their acknowledgement (3 s timeout)
        engine.kill9()
        killed_at = datetime.now(timezone.utc)
        during = [make_alert(lat, lon, IncidentKind.intrusion, 2) for lat, lon in random_places(district, 2, rng)]
        for a in during:
            await js.publish(s.operator_alert("c2"), encode(a), headers={"Nats-Msg-Id": a.id})
        await asyncio.sleep(3.5)  # the pending orders' deadlines pass while nobody is running
        assert not any(e["event"] == "timed_out" for e in events), "a timeout fired although no engine ran"

        engine.start()
        await engine.wait_ready()
        restarted_at = datetime.now(timezone.utc)

        # -- pending timeouts fire: timed_out for the old orders, an order to the next unit
        def timed_out_and_reassigned(i: str) -> bool:
            old = first_orders[i]
            return any(
                e["incident_id"] == i and e["event"] == "timed_out" and e["order_id"] == old["order_id"] for e in events
            ) and any(e["order_id"] != old["order_id"] for e in assigned_to(i))

        await wait_for(lambda: all(timed_out_and_reassigned(i) for i in pending), 10, "timeouts after the restart")
        for i in pending:
            old = first_orders[i]
            t_out = next(e for e in events if e["incident_id"] == i and e["event"] == "timed_out")
            assert datetime.fromisoformat(t_out["time"]) > killed_at
            nxt = [e for e in assigned_to(i) if e["order_id"] != old["order_id"]][0]
            assert nxt["unit"] != old["unit"], "the order must go to the next unit"
            cancel = [o for o in orders if o["order_id"] == old["order_id"] and o["action"] == "cancel"]
            assert cancel, f"the timed-out order {old['order_id']} was not withdrawn from {old['unit']}"

        # -- alerts raised while the engine was dead are served after the restart
        def served_during() -> bool:
            return all(
                any(a.id in e.get("alert_ids", ()) for e in events)
                and any(
                    e["event"] == "assigned"
                    and e["incident_id"] == next(x["incident_id"] for x in events if a.id in x.get("alert_ids", ()))
                    for e in events
                )
                for a in during
            )

        await wait_for(served_during, 10, "the alerts raised while the engine was down")

        # -- acknowledged incidents kept their unit; nothing was lost from the bucket
        await asyncio.sleep(0.5)
        bucket = await read_bucket(js, s.bucket_state, s.incident_keys)
        for i in incidents_before:
            assert i in bucket, f"incident {i} was lost"
            assert bucket[i]["state"] not in ("resolved", "cancelled"), bucket[i]
        for i in acked:
            assert bucket[i]["state"] == "acknowledged"
            assert bucket[i]["unit"] == first_orders[i]["unit"]
            assert not any(e["incident_id"] == i and e["event"] == "timed_out" for e in events)
        for i in pending:
            assert bucket[i]["state"] in ("assigned", "queued", "escalated", "acknowledged")
            assert bucket[i]["unit"] != first_orders[i]["unit"]
            assert any(a["order_id"] == first_orders[i]["order_id"] and a["outcome"] == "timed_out" for a in bucket[i]["attempts"])
        units = await read_bucket(js, s.bucket_state, s.unit_keys)
        for i in acked:
            u = units[first_orders[i]["unit"]]
            assert (u["state"], u["incident"]) == ("acknowledged", i)
        for i in pending:
            u = units[first_orders[i]["unit"]]
            assert u["order"] != first_orders[i]["order_id"], "the timed-out unit still holds the order"
    finally:
        engine.stop()

    try:
        # -- the durable record: no order twice, every event once per incident sequence number
        radio = await read_stream(js, s.stream_radio)
        assigns = Counter(b["order_id"] for subj, b in radio if subj.endswith(".order") and b["action"] == "assign")
        assert assigns and max(assigns.values()) == 1, f"orders stored twice: {[o for o, n in assigns.items() if n > 1]}"
        received = Counter(o["order_id"] for o in orders if o["action"] == "assign")
        assert max(received.values()) == 1, "a unit received one order twice"
        stored = [b for subj, b in await read_stream(js, s.stream_incidents)]
        seqs = Counter((e["incident_id"], e["seq"]) for e in stored)
        assert max(seqs.values()) == 1, "an incident event was recorded twice"
        for i in incidents_before:
            got = sorted(e["seq"] for e in stored if e["incident_id"] == i)
            assert got == list(range(1, len(got) + 1)), f"incident {i} has a gap in its history: {got}"
        assert killed_at < restarted_at
    finally:
        await nc.close()
