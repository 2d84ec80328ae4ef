"""The engine as a FastStream app: subscribers in one queue group, wired to the shell.

    build_app(district, ["nats://127.0.0.1:4222"]) -> (FastStream app, EngineRuntime)

Service tests call `register()` on a broker wrapped in FastStream's TestNatsBroker
and give the shell an in-memory store; production uses JetStream everything.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from faststream import FastStream
from faststream.middlewares import AckPolicy
from faststream.nats import DeliverPolicy, JStream, NatsBroker, NatsMessage

from dispatch.core.decide import EngineState
from dispatch.engine import EngineShell
from dispatch.store import JetStreamBus, KVStore, ack_numbers, ensure_streams, use_fast_header_lines
from dispatch.subjects import Subjects

log = structlog.get_logger("dispatch.app")

GC_GEN0_THRESHOLD = 50_000  # allocations between two young-generation collections (Python's default: 700)


@dataclass
class EngineRuntime:
    """What the app's hooks fill in; tests and the CLI read it."""

    district: Any
    subjects: Subjects
    name: str = "engine"
    replicas: int = 1
    shell: EngineShell | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def need_shell(self) -> EngineShell:
        if self.shell is None:
            raise RuntimeError("engine not started yet")
        return self.shell


def _redelivered(msg: NatsMessage) -> bool:
    """Whether JetStream delivers the message again: its delivery count, read straight from the
    acknowledgement subject (`store.ack_numbers`), without building nats-py's whole metadata."""
    try:
        reply = msg.raw_message.reply
        if not reply or not reply.startswith("$JS.ACK."):
            return False  # core NATS messages and the test broker carry no JetStream metadata
        return ack_numbers(reply)[0] > 1
    except Exception:
        return False


def _cheap_log_context(sub: Any) -> None:
    """FastStream builds a log context for every message (the subscriber's subject resolved again,
    for a logger the engine does not give it: see build_app); the subscriber's part of it does not
    change, so it is built once."""
    build = sub.get_log_context
    base: dict[str, str] = {}

    def get_log_context(message: Any) -> dict[str, str]:
        if not base:
            base.update(build(None))
        return {**base, "message_id": getattr(message, "message_id", "")}

    sub.get_log_context = get_log_context


def _lean_consume(sub: Any, handler: Callable[[Any], Awaitable[None]]) -> None:
    """FastStream's per-message path made cheaper for one subscriber of ours: what `consume` does for
    it, without what it does for features these subscribers do not use.

    FastStream still subscribes, parses (its `NatsMessage`, acknowledged through it), tracks messages in
    flight (its lock, which a stopping subscriber waits on) and starts and stops everything. Left out:
    its middleware stack (with `logger=None` its logging middleware writes nothing; the acknowledgement
    is manual), the context scopes that dependency injection reads (`apply_types=False`), the filter
    (the default one accepts a message not yet processed, which a fresh one is not) and the reply
    publisher (used only when a message asks for an answer: such a message takes FastStream's own
    path). Each of those cost a few microseconds per message: 6 % of a saturated engine's time for
    the two inputs of an alert. A subscriber given more than one handler or any broker middleware
    keeps FastStream's path too."""
    full = sub.consume
    plan: list[Any] = []  # [the call item] once it is known to fit, [None] if not

    async def consume(msg: Any) -> Any:
        if not sub.running:
            return None
        if not plan:
            calls = list(sub.calls)
            ok = len(calls) == 1 and calls[0].parser is not None and calls[0].decoder is not None
            plan.append(calls[0] if ok and not sub._broker_middlewares else None)
        item = plan[0]
        if item is None:
            return await full(msg)
        with sub.lock:
            try:
                message = await item.parser(msg)
                if message.reply_to:
                    return await full(msg)
                message.set_decoder(item.decoder)
                await handler(await message.decode())
            except Exception:  # FastStream's `consume` swallows them too (its logger is off here)
                log.exception("handling an input failed", subject=getattr(msg, "subject", "?"))
        return None

    sub.consume = consume


async def _as_is(msg: Any) -> Any:
    """Decoder that hands the handler FastStream's message itself.

    The engine validates the bytes with its own models; FastStream's default decoder would parse
    the JSON once more, and taking the message from FastStream's context (`msg: NatsMessage`)
    resolves it in a worker thread, a thread hop per message.
    """
    return msg


def register(broker: NatsBroker, rt: EngineRuntime, lean: bool = False) -> None:
    """Subscribe the engine's inputs. Alerts and replies: durable JetStream consumers shared by
    every replica (queue group); positions and status: core NATS in the same queue group.
    `lean`: FastStream's cheaper per-message path (`_lean_consume`), for a real broker."""
    s = rt.subjects
    q = s.engine_queue
    # FastStream warns that a durable push consumer does not scale; with `queue` it is a
    # deliver group that every replica binds to, which is exactly how replicas share work.
    warnings.filterwarnings("ignore", message="The JetStream Push consumer with the `durable` option")

    async def handle_stream(msg: Any) -> None:  # a NatsMessage, see _as_is
        shell = rt.need_shell()
        await shell.ready.wait()

        async def settle(ok: bool) -> None:
            # acknowledged only once the decision is stored; a failed decision is delivered again
            await (msg.ack() if ok else msg.nack())

        # the handler returns at once: the shell decides what has queued up in batches and settles
        # each message afterwards, so the next message need not wait for this one's writes
        shell.submit(msg.raw_message.subject, msg.body, _redelivered(msg), settle)

    async def handle_core(msg: Any) -> None:
        shell = rt.need_shell()
        await shell.ready.wait()
        shell.submit(msg.raw_message.subject, msg.body)

    for stream, durable, subject, title in _durable_inputs(s):
        sub = broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=durable,
            queue=durable,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.MANUAL,
            decoder=_as_is,
            title=title,
        )
        sub(handle_stream)
        _cheap_log_context(sub)
        if lean:
            _lean_consume(sub, handle_stream)
    for subject, title in ((s.all_unit_positions, "positions"), (s.all_unit_status, "status")):
        sub = broker.subscriber(subject, queue=q, decoder=_as_is, title=title)
        sub(handle_core)
        _cheap_log_context(sub)
        if lean:
            _lean_consume(sub, handle_core)


def _durable_inputs(s: Subjects) -> list[tuple[str, str, str, str]]:
    """(stream, durable consumer = deliver group, filter subject, title) of the inputs read from JetStream."""
    q = s.engine_queue
    return [
        (s.stream_alerts, f"{q}_alerts", s.all_alerts, "alerts from cameras and operators"),
        (s.stream_radio, f"{q}_replies", s.all_replies, "replies from units"),
        (s.stream_ops, f"{q}_ops", s.all_incident_actions, "operator actions: close, cancel, reassign, escalate"),
    ]


async def ensure_consumers(js: Any, s: Subjects) -> None:
    """Create the replicas' shared durable push consumers before any replica subscribes.

    Left to the subscribe call, two replicas starting together both find no consumer, both create
    one with their own random deliver inbox, and the second fails with "consumer name already in
    use" (the engine exits). Created here with a deliver subject derived from the name, the two
    requests are identical, which JetStream accepts; subscribing then binds to the consumer.
    """
    from nats.js.api import AckPolicy as JsAckPolicy
    from nats.js.api import ConsumerConfig
    from nats.js.api import DeliverPolicy as JsDeliverPolicy
    from nats.js.errors import NotFoundError

    for stream, durable, subject, _ in _durable_inputs(s):
        for attempt in range(5):
            try:
                await js.consumer_info(stream, durable)
                break
            except NotFoundError:
                pass
            try:
                await js.add_consumer(
                    stream,
                    ConsumerConfig(
                        durable_name=durable,
                        deliver_group=durable,
                        deliver_subject=f"_INBOX.patrollink.{durable}",
                        deliver_policy=JsDeliverPolicy.ALL,
                        ack_policy=JsAckPolicy.EXPLICIT,
                        filter_subject=subject,
                    ),
                )
                break
            except Exception as e:  # created meanwhile by another replica with another config: look again
                log.info("consumer creation raced", consumer=durable, attempt=attempt + 1, detail=str(e))
                await asyncio.sleep(0.05 * (attempt + 1))


HELLO_WAIT_S = 0.2
"""How long a starting engine waits for another replica to answer its hello (loopback: ~1 ms)."""


async def meet_replicas(nc: Any, subject: str, seen: Callable[[], None], wait_s: float = HELLO_WAIT_S) -> bool:
    """Say hello to the other engine replicas and keep listening for newcomers; True if one answered.

    Every replica calls `seen` when a newcomer says hello (and answers it), before the newcomer takes
    any input: from then on both write claims first and releases atomically. Two replicas starting
    together on one server hear each other's hello (each listens before it speaks); an answer later
    than `wait_s` still calls `seen`. What this misses (a cluster whose routes have not yet spread the
    interest, a replica too busy to answer in time) the engine finds out from the other's records in
    its bucket watch, or from a conflict (`EngineShell.share`). Once seen, a replica stays seen: one
    that went quiet may be cut off, not gone."""
    me = uuid.uuid4().hex.encode()

    async def on_hello(msg: Any) -> None:
        if msg.data == me:
            return  # our own
        seen()
        if msg.reply:
            await nc.publish(msg.reply, me)

    await nc.subscribe(subject, cb=on_hello)
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[bool] = loop.create_future()

    async def on_answer(msg: Any) -> None:
        if msg.data == me:
            return
        if answered.done():
            seen()  # an answer later than wait_s (the other was busy): switch now
        else:
            answered.set_result(True)

    # kept for good: an answer that comes late still counts
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=on_answer)
    await nc.publish(subject, me, reply=inbox)
    await nc.flush()
    try:
        return await asyncio.wait_for(asyncio.shield(answered), wait_s)
    except asyncio.TimeoutError:
        if not answered.done():
            answered.set_result(False)
        return False


def build_app(
    district: Any,
    servers: list[str],
    prefix: str = "",
    name: str = "engine",
    replicas: int = 1,
    graph: Any | None = None,
) -> tuple[FastStream, EngineRuntime]:
    """The production engine: JetStream streams, key-value state, timers."""
    subjects = Subjects(prefix)
    rt = EngineRuntime(district=district, subjects=subjects, name=name, replicas=replicas)
    # logger=None: FastStream's per-message access log costs more than a decision; structlog records those.
    # apply_types=False: the handlers take FastStream's message as it is (see _as_is), so the dependency
    # injection layer, which would validate that argument per message, has nothing to do.
    broker = NatsBroker(
        servers, name=f"patrollink-{name}", max_reconnect_attempts=-1, reconnect_time_wait=0.5, logger=None,
        apply_types=False,
    )
    register(broker, rt, lean=True)
    app = FastStream(broker)
    rt.extras["broker"] = broker

    @app.on_startup
    async def _connect() -> None:
        use_fast_header_lines()  # the same headers for every message, parsed in half the time
        await broker.connect()
        js = broker.connection.jetstream()
        await ensure_streams(js, subjects, replicas=replicas)
        await ensure_consumers(js, subjects)
        store = await KVStore(js, subjects, replicas=replicas).open()
        street_graph = graph if graph is not None else district.load_streets()
        state = EngineState(district, street_graph)
        rt.shell = shell = EngineShell(state, store, JetStreamBus(js), subjects, name=name)
        await shell.load()
        shell.shared = False  # until another replica is seen (before we take any input)
        if await meet_replicas(broker.connection, subjects.engine_hello, lambda: shell.share("hello")):
            shell.share("hello answered")
        # the district, street graph and loaded state live as long as the process: keep the cyclic
        # garbage collector from walking them on every full collection (fewer long pauses)
        gc.collect()
        gc.freeze()
        # A decision allocates a few hundred containers (records, dicts, tuples), nearly all freed by
        # reference counting, yet every 700 allocations (the default) the collector walked what was
        # young: ~6 % of a decision's time. Cycles (asyncio's futures and tracebacks) wait a little longer.
        # The count is of objects allocated and not yet freed, and a batch (up to 200 inputs) holds many
        # until it ends: at 10,000 a saturated engine collected about 25 times a second, mid-batch,
        # walking what the batch held (3 ms each; with the older generation's, 9 % of its CPU in a 15 s
        # run at 1,000 alerts/s); at 50,000 a batch mostly ends, freeing them, first (GC 2 %, startup
        # included). A collection, when one comes, walks more objects: a longer, rarer pause.
        gc.set_threshold(GC_GEN0_THRESHOLD, 10, 10)

    @app.after_startup
    async def _timers() -> None:
        rt.need_shell().start_timers()
        log.info("engine ready", name=name, servers=servers, district=district.name, prefix=prefix or None,
                 shared=rt.need_shell().shared)

    @app.on_shutdown
    async def _stop() -> None:
        if rt.shell is not None:
            await rt.shell.stop()

    return app, rt
