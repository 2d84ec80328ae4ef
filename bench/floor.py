"""The floor under the engine's alert-to-order figure: the engine's NATS traffic with no rules at all.

    python -m bench.floor --nats URL [--prefix bench] [--units 1000]

A relay, run by `python -m bench.engine` as a child process after the engine, on the same
nats-server and under the same load: it reads alerts and unit replies from the engine's
JetStream streams (durable push consumers, explicit acknowledgements), and for each does the
NATS work the engine must do for it, in the same order, with nats-py alone: two key-value writes
with revision checks (unit and incident) whose answers it waits for, then the order and the
incident events published to their streams, then the input acknowledged; a reply, the same with
one event. It decides nothing: the unit is the next one round the list, the records and messages
are small fixed JSON, every input is handled in a task of its own (no batches, no lock, no
ordering). What it costs and how fast it answers is what any engine written on nats-py costs
on this machine before it decides anything, the floor the target of 5 x RTT p99 is measured
against (docs/benchmarks.md, "The floor").

With `--bare` it does less than any engine could: no key-value writes, the order and the `opened`
event (which the benchmark needs to time the order) sent with plain publishes whose storage is not
confirmed, the input acknowledged; a reply is only acknowledged. The time from an alert's publish to
its order is then the broker's hops and nats-py's handling alone.

Prints `floor ready` on standard output once subscribed; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import datetime, timezone
from typing import Any

from dispatch.events import new_id
from dispatch.store import ensure_streams
from dispatch.subjects import Subjects


class Relay:
    def __init__(self, nc: Any, js: Any, s: Subjects, units: list[str], bare: bool = False) -> None:
        self.nc, self.js, self.s, self.units, self.bare = nc, js, s, units, bare
        self.name = "floor_bare" if bare else "floor"  # its durable consumers
        self.next_unit = 0
        self.rev: dict[str, int] = {}  # key -> last revision written
        self.in_flight: dict[str, int] = {}  # key -> writes not answered yet
        self.failed = 0  # key-value writes refused or not answered
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType

        s = self.s
        await ensure_streams(self.js, s)
        try:
            await self.js.key_value(s.bucket_state)
        except Exception:
            await self.js.create_key_value(KeyValueConfig(bucket=s.bucket_state, history=1, storage=StorageType.FILE))
        self.kv_prefix = f"$KV.{s.bucket_state}."
        for stream, name, subject, cb in (
            (s.stream_alerts, f"{self.name}_alerts", s.all_alerts, self.on_alert),
            (s.stream_radio, f"{self.name}_replies", s.all_replies, self.on_reply),
        ):
            inbox = f"_INBOX.floor.{name}"
            await self.js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=name, deliver_group=name, deliver_subject=inbox, deliver_policy=DeliverPolicy.NEW,
                    ack_policy=AckPolicy.EXPLICIT, filter_subject=subject,
                ),
            )
            await self.nc.subscribe(inbox, queue=name, cb=self._spawn(cb), pending_msgs_limit=-1, pending_bytes_limit=-1)
        await self.nc.flush()

    def _spawn(self, handler: Any) -> Any:
        async def cb(m: Any) -> None:  # every input at once, in a task of its own
            t = asyncio.get_running_loop().create_task(handler(m))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

        return cb

    async def _put(self, key: str, value: dict[str, Any]) -> Any:
        """A key-value write with the engine's revision check; the awaitable of its answer. nats-py drops
        the answer of a refused asynchronous publish (its future never completes), so the check is only
        asked for where it cannot fail: a key whose last revision the relay wrote itself and that no other
        of its writes has in flight (the first write to a record of the engine's run goes unchecked)."""
        headers = None
        rev = self.rev.get(key)
        if rev is not None and key not in self.in_flight:
            headers = {"Nats-Expected-Last-Subject-Sequence": str(rev)}
        self.in_flight[key] = self.in_flight.get(key, 0) + 1
        return await self.js.publish_async(self.kv_prefix + key, json.dumps(value).encode(), headers=headers)

    async def _stored(self, keys: list[str], answers: list[Any]) -> None:
        try:
            acks = await asyncio.wait_for(asyncio.gather(*answers, return_exceptions=True), 30.0)
        except asyncio.TimeoutError:
            acks = [asyncio.TimeoutError()] * len(keys)
        for key, ack in zip(keys, acks):
            n = self.in_flight.pop(key) - 1
            if n:
                self.in_flight[key] = n
            if isinstance(ack, BaseException):
                self.failed += 1
            else:
                self.rev[key] = ack.seq

    async def _send(self, msgs: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        out = []
        for subject, body in msgs:
            mid = body["id"]
            out.append(await self.js.publish_async(subject, json.dumps(body).encode(), headers={"Nats-Msg-Id": mid}))
        return out

    async def on_alert(self, m: Any) -> None:
        s = self.s
        alert = json.loads(m.data)
        unit = self.units[self.next_unit % len(self.units)]
        self.next_unit += 1
        iid, oid, now = new_id(), new_id(), datetime.now(timezone.utc).isoformat()
        if self.bare:
            order = {"id": new_id(), "time": now, "action": "assign", "order_id": oid, "incident_id": iid, "unit": unit}
            opened = {"id": new_id(), "time": now, "incident_id": iid, "event": "opened", "alert_ids": [alert["id"]]}
            await self.nc.publish(s.order(unit), json.dumps(order).encode())
            await self.nc.publish(s.incident_event(iid, "opened"), json.dumps(opened).encode())
            await m.ack()
            return
        ukey, ikey = s.unit_key(unit), s.incident_key(iid)
        unit_rec = {"id": unit, "state": "assigned", "incident": iid, "order": oid, "updated": now}
        inc_rec = {"id": iid, "state": "assigned", "unit": unit, "order": oid, "alert_ids": [alert["id"]], "updated": now}
        await self._stored([ukey, ikey], [await self._put(ukey, unit_rec), await self._put(ikey, inc_rec)])
        sent = await self._send(
            [
                (s.order(unit), {"id": new_id(), "time": now, "action": "assign", "order_id": oid, "incident_id": iid, "unit": unit}),
                (s.incident_event(iid, "opened"), {"id": new_id(), "time": now, "incident_id": iid, "event": "opened", "alert_ids": [alert["id"]]}),
                (s.incident_event(iid, "assigned"), {"id": new_id(), "time": now, "incident_id": iid, "event": "assigned", "unit": unit}),
            ]
        )
        await m.ack()
        await asyncio.gather(*sent, return_exceptions=True)  # the stream's answers, read as the engine reads them

    async def on_reply(self, m: Any) -> None:
        if self.bare:
            await m.ack()
            return
        s = self.s
        r = json.loads(m.data)
        now = datetime.now(timezone.utc).isoformat()
        ukey, ikey = s.unit_key(r["unit"]), s.incident_key(r["incident_id"])
        await self._stored(
            [ukey, ikey],
            [
                await self._put(ukey, {"id": r["unit"], "state": "available", "updated": now}),
                await self._put(ikey, {"id": r["incident_id"], "state": "resolved", "updated": now}),
            ],
        )
        sent = await self._send(
            [(s.incident_event(r["incident_id"], "resolved"), {"id": new_id(), "time": now, "incident_id": r["incident_id"], "event": "resolved"})]
        )
        await m.ack()
        await asyncio.gather(*sent, return_exceptions=True)


async def serve(url: str, prefix: str, units: int, bare: bool = False) -> None:
    import nats

    nc = await nats.connect(url, name="bench-floor", pending_size=64 * 1024 * 1024)
    js = nc.jetstream(publish_async_max_pending=20000)
    relay = Relay(nc, js, Subjects(prefix), [f"b{i:04d}" for i in range(units)], bare)
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
