"""Every NATS message in and out of the engine for one alert and its unit's `cleared` reply.

    python -m bench.trace_engine [--alerts N]

Starts an embedded nats-server (with monitoring), the engine child (as bench.engine does) and a
monitor connection subscribed to `>`; places the units, waits until the position flushes are done,
then raises one alert at a time (the simulated unit clears each order at once) and prints every
message seen on the server in the second after, with the engine connection's in/out message
counters (from /connz) before and after. With --strace, the engine's event-loop turns (epoll_wait
calls), socket writes and reads over all the alerts, from `strace -c`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.engine import PREFIX, Engine, Load, wait_units, write_district


def _connz(url: str) -> dict[str, dict[str, Any]]:
    with urllib.request.urlopen(url + "/connz?subs=1", timeout=2) as r:
        data = json.loads(r.read())
    return {c.get("name", str(c["cid"])): c for c in data.get("connections", [])}


async def trace(n_alerts: int, strace: bool = False) -> None:
    import nats

    from dispatch.events import UnitPosition, encode
    from dispatch.natsserver import EmbeddedNats, free_port
    from dispatch.subjects import Subjects

    s = Subjects(PREFIX)
    with tempfile.TemporaryDirectory(prefix="patrollink-trace-") as tmp:
        work = Path(tmp)
        server = EmbeddedNats(work / "nats", name="patrollink-trace", http_port=free_port())
        await server.astart()
        mon_url = server.monitor_url
        assert mon_url is not None
        try:
            district_file = work / "d.yaml"
            district, places = write_district(district_file, 50)
            engine = Engine(district_file, server.url, work, "info")
            await engine.start()
            nc = await nats.connect(server.url, name="trace-load")
            js = nc.jetstream()
            for uid, lat, lon in places:
                await nc.publish(s.unit_position(uid), encode(UnitPosition(unit=uid, lat=lat, lon=lon, accuracy_m=5.0)))
            await nc.flush()
            await wait_units(js, s.bucket_state, len(places))
            load = Load(nc, js, district, random.Random(5))
            await load.start()
            mon = await nats.connect(server.url, name="trace-monitor")
            seen: list[tuple[float, str, str, int, list[str]]] = []

            async def on(m: Any) -> None:
                seen.append((time.perf_counter(), m.subject, m.reply or "", len(m.data), sorted((m.headers or {}).keys())))

            await mon.subscribe(">", cb=on)
            await mon.flush()
            await asyncio.sleep(2.5)  # position flushes and watch echoes of the placement settle
            from bench.engine import cpu_seconds
            assert engine.proc is not None
            c_idle = cpu_seconds(engine.proc.pid)
            await asyncio.sleep(5.0)
            print(f"engine CPU while idle: {(cpu_seconds(engine.proc.pid) - c_idle) / 5.0 * 1000:.1f} ms per second")
            tracer = None
            if strace:
                idle = subprocess.Popen(
                    ["strace", "-f", "-c", "-e", "trace=epoll_wait", "-p", str(engine.proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )
                await asyncio.sleep(5.0)
                idle.send_signal(signal.SIGINT)
                print("strace -c over 5 s with no input (the engine's own timers):\n" + idle.communicate(timeout=10)[1])
                # system calls of the engine while the alerts are answered: epoll_wait is called once
                # per event-loop turn, sendto/write are socket writes, recvfrom/read socket reads
                tracer = subprocess.Popen(
                    ["strace", "-f", "-c", "-e", "trace=epoll_wait,sendto,write,recvfrom,read", "-p", str(engine.proc.pid)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                )
                await asyncio.sleep(1.0)
                t_strace = time.perf_counter()
            for i in range(n_alerts):
                seen.clear()
                c0 = _connz(mon_url)["patrollink-bench"]
                subj_alert, body = load.alerts(1)[0][1:]
                t0 = time.perf_counter()
                await nc.publish(subj_alert, body, headers={"Nats-Msg-Id": json.loads(body)["id"]})
                await asyncio.sleep(1.0 if i < 2 else 0.2)
                c1 = _connz(mon_url)["patrollink-bench"]
                if i >= 2:
                    continue
                print(f"\n=== alert {i + 1}: {len(seen)} messages on the server; engine connection: "
                      f"in {c1['out_msgs'] - c0['out_msgs']} msgs (server->engine), out {c1['in_msgs'] - c0['in_msgs']} msgs (engine->server)")
                for t, subj, reply, size, hdrs in seen:
                    print(f"{(t - t0) * 1000:8.2f} ms  {subj:<70} reply={reply:<50} {size:>5} B  {','.join(hdrs)}")
            if tracer is not None:
                idle_s = time.perf_counter() - t_strace
                tracer.send_signal(signal.SIGINT)
                _, err = tracer.communicate(timeout=10)
                print(f"\nstrace -c over {n_alerts} alerts and their replies ({idle_s:.1f} s, about 0.8 s idle before the first):")
                print(err)
            await mon.close()
            await nc.close()
            engine.stop()
        finally:
            await server.astop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.trace_engine")
    p.add_argument("--alerts", type=int, default=2, help="alerts raised one at a time (messages printed for the first two)")
    p.add_argument("--strace", action="store_true", help="count the engine's system calls over the alerts (strace -c)")
    a = p.parse_args(argv)
    asyncio.run(trace(a.alerts, a.strace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
