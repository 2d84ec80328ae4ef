"""The floor under the engine's alert-to-order figure: the engine's NATS traffic with no rules at all.

    python -m bench.floor --nats URL [--prefix bench] [--units 1000] [--bare]

A relay, run by `python -m bench.engine` as a child process after the engine, on the same
nats-server and under the same load: it reads alerts and unit replies from the engine's
JetStream streams (durable push consumers, explicit acknowledgements), and for each does the
NATS work the engine must do for it, in the same order, with nats-py alone: two key-value writes
with revision checks (unit and incident) whose answers it waits for, then the order and the
incident events published to their streams (their answers read too), then the input
acknowledged; a reply, the same with one event. It decides nothing: the unit is the next one round
the list, the records and messages are small JSON made by formatting bytes. It is written for as
little Python per message as nats-py allows: each input is handled in its subscription's callback,
every publish that wants an answer carries a reply subject of the relay's own inbox, and one
callback there counts a step's answers and starts its next step (no task per input, no futures).
What it costs and how fast it answers is what an engine written on nats-py costs on this machine
before it decides anything: the floor the target of 5 x RTT p99 is measured against
(docs/benchmarks.md, "The floor").

With `--bare` it does less than any engine could: no key-value writes, the order and the `opened`
event (which the benchmark needs to time the order) sent with plain publishes whose storage is not
confirmed, the input acknowledged; a reply is only acknowledged. The time from an alert's publish to
its order is then the broker's hops and nats-py's handling alone.

Prints `floor ready` on standard output once subscribed; stops on SIGTERM, printing how many
key-value writes failed (none should: only the relay writes its keys).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from dispatch.events import new_id
from dispatch.store import ensure_streams
from dispatch.subjects import Subjects

_SEQ = re.compile(rb'"seq":\s*(\d+)')


class Step:
    """Answers an input still waits for, and what to do once they are in."""

    __slots__ = ("due", "then", "args")

    def __init__(self, due: int, then: Callable[..., Awaitable[None]] | None, args: tuple[Any, ...]) -> None:
        self.due, self.then, self.args = due, then, args


class Relay:
    def __init__(self, nc: Any, js: Any, s: Subjects, units: list[str], bare: bool = False) -> None:
        self.nc, self.js, self.s, self.units, self.bare = nc, js, s, units, bare
        self.name = "floor_bare" if bare else "floor"  # its durable consumers
        self.next_unit = 0
        self.rev: dict[str, int] = {}  # key -> last revision written
        self.in_flight: dict[str, int] = {}  # key -> writes not answered yet
        self.failed = 0  # key-value writes refused
        self.pending: dict[str, tuple[Step, str | None]] = {}  # reply token -> (its step, the key it writes)
        self.seq = 0

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType

        s = self.s
        await ensure_streams(self.js, s)
        try:
            await self.js.key_value(s.bucket_state)
        except Exception:
            await self.js.create_key_value(KeyValueConfig(bucket=s.bucket_state, history=1, storage=StorageType.FILE))
        self.kv_prefix = f"$KV.{s.bucket_state}."
        self.inbox = self.nc.new_inbox()
        await self.nc.subscribe(self.inbox + ".*", cb=self.on_answer, pending_msgs_limit=-1, pending_bytes_limit=-1)
        for stream, name, subject, cb in (
            (s.stream_alerts, f"{self.name}_alerts", s.all_alerts, self.on_alert),
            (s.stream_radio, f"{self.name}_replies", s.all_replies, self.on_reply),
        ):
            deliver = f"_INBOX.floor.{name}"
            await self.js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=name, deliver_group=name, deliver_subject=deliver, deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.EXPLICIT, filter_subject=subject,
                ),
            )
            await self.nc.subscribe(deliver, queue=name, cb=cb, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await self.nc.flush()

    # -- answers
    def _reply_to(self, step: Step, key: str | None = None) -> str:
        self.seq += 1
        token = str(self.seq)
        self.pending[token] = (step, key)
        return f"{self.inbox}.{token}"

    async def on_answer(self, msg: Any) -> None:
        got = self.pending.pop(msg.subject[len(self.inbox) + 1:], None)
        if got is None:
            return
        step, key = got
        if key is not None:  # a key-value write: its revision, for the next write's check
            n = self.in_flight.pop(key) - 1
            if n:
                self.in_flight[key] = n
            m = _SEQ.search(msg.data)
            if m is None or b'"error"' in msg.data:
                self.failed += 1
            else:
                self.rev[key] = int(m.group(1))
        step.due -= 1
        if step.due == 0 and step.then is not None:
            await step.then(*step.args)

    async def _write(self, step: Step, key: str, body: bytes) -> None:
        """A key-value write with the engine's revision check. The check is asked for where it cannot
        fail: a key whose last revision the relay wrote itself and that none of its writes has in flight
        (the first write to a record of the engine's run goes unchecked)."""
        headers = None
        rev = self.rev.get(key)
        if rev is not None and key not in self.in_flight:
            headers = {"Nats-Expected-Last-Subject-Sequence": str(rev)}
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        await self.nc.publish(self.kv_prefix + key, body, reply=self._reply_to(step, key), headers=headers)

    async def _send(self, msgs: list[tuple[str, bytes]]) -> None:
        """Messages to their streams, de-duplicated by id as the engine's are; their answers counted."""
        step = Step(len(msgs), None, ())
        for subject, body in msgs:
            mid = new_id()
            await self.nc.publish(subject, body.replace(b"@ID@", mid.encode()), reply=self._reply_to(step), headers={"Nats-Msg-Id": mid})

    # -- inputs
    async def on_alert(self, m: Any) -> None:
        s = self.s
        aid = json.loads(m.data)["id"].encode()
        unit = self.units[self.next_unit % len(self.units)]
        self.next_unit += 1
        iid, oid, now = new_id(), new_id(), datetime.now(timezone.utc).isoformat()
        u, i, o, t = unit.encode(), iid.encode(), oid.encode(), now.encode()
        if self.bare:
            await self.nc.publish(s.order(unit), _order(u, i, o, t).replace(b"@ID@", new_id().encode()))
            await self.nc.publish(s.incident_event(iid, "opened"), _opened(i, aid, t).replace(b"@ID@", new_id().encode()))
            await self.nc.publish(m.reply, b"")  # the input's acknowledgement
            return
        step = Step(2, self._alert_stored, (m, unit, iid, u, i, o, aid, t))
        await self._write(step, s.unit_key(unit), b'{"id":"%s","state":"assigned","incident":"%s","order":"%s","updated":"%s"}' % (u, i, o, t))
        await self._write(
            step, s.incident_key(iid), b'{"id":"%s","state":"assigned","unit":"%s","order":"%s","alert_ids":["%s"],"updated":"%s"}' % (i, u, o, aid, t)
        )

    async def _alert_stored(self, m: Any, unit: str, iid: str, u: bytes, i: bytes, o: bytes, aid: bytes, t: bytes) -> None:
        s = self.s
        await self._send(
            [
                (s.order(unit), _order(u, i, o, t)),
                (s.incident_event(iid, "opened"), _opened(i, aid, t)),
                (s.incident_event(iid, "assigned"), b'{"id":"@ID@","time":"%s","incident_id":"%s","event":"assigned","unit":"%s"}' % (t, i, u)),
            ]
        )
        await self.nc.publish(m.reply, b"")

    async def on_reply(self, m: Any) -> None:
        if self.bare:
            await self.nc.publish(m.reply, b"")
            return
        s = self.s
        r = json.loads(m.data)
        unit, iid = r["unit"], r["incident_id"]
        t = datetime.now(timezone.utc).isoformat().encode()
        step = Step(2, self._reply_stored, (m, iid, t))
        await self._write(step, s.unit_key(unit), b'{"id":"%s","state":"available","updated":"%s"}' % (unit.encode(), t))
        await self._write(step, s.incident_key(iid), b'{"id":"%s","state":"resolved","updated":"%s"}' % (iid.encode(), t))

    async def _reply_stored(self, m: Any, iid: str, t: bytes) -> None:
        event = b'{"id":"@ID@","time":"%s","incident_id":"%s","event":"resolved"}' % (t, iid.encode())
        await self._send([(self.s.incident_event(iid, "resolved"), event)])
        await self.nc.publish(m.reply, b"")


def _order(u: bytes, i: bytes, o: bytes, t: bytes) -> bytes:
    return b'{"id":"@ID@","time":"%s","action":"assign","order_id":"%s","incident_id":"%s","unit":"%s"}' % (t, o, i, u)


def _opened(i: bytes, aid: bytes, t: bytes) -> bytes:
    return b'{"id":"@ID@","time":"%s","incident_id":"%s","event":"opened","alert_ids":["%s"]}' % (t, i, aid)


async def serve(url: str, prefix: str, units: int, bare: bool = False) -> None:
    import nats

    nc = await nats.connect(url, name="bench-floor", pending_size=64 * 1024 * 1024)
    relay = Relay(nc, nc.jetstream(), Subjects(prefix), [f"b{i:04d}" for i in range(units)], bare)
    await relay.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("floor ready", flush=True)
    await stop.wait()
    print(json.dumps({"key_value_writes_failed": relay.failed}), flush=True)
    await nc.drain()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    p.add_argument("--nats", required=True, help="NATS URL")
    p.add_argument("--prefix", default="bench", help="subject prefix (the engine benchmark's)")
    p.add_argument("--units", type=int, default=1000, help="unit ids b0000 .. round which the orders go")
    p.add_argument("--bare", action="store_true", help="no key-value writes, nothing confirmed: the broker's hops alone")
    a = p.parse_args(argv)
    asyncio.run(serve(a.nats, a.prefix, a.units, a.bare))
    return 0


if __name__ == "__main__":
    sys.exit(main())
