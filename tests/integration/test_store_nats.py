"""The engine's storage plumbing on a real nats-server: the bucket watch and the publish bus.

Both lean on nats-py's subscription internals to save work per message (dispatch/store.py); these
tests fail if a nats-py upgrade quietly turns that off or breaks it.
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from dispatch.core.records import IncidentRec, IncidentState, UnitKind, UnitRec, UnitState
from dispatch.store import Conflict, JetStreamBus, KVStore, PublishRefused, ensure_streams
from dispatch.subjects import Subjects


def unit(uid: str) -> UnitRec:
    return UnitRec(id=uid, kind=UnitKind.police, mode="car", talkgroup="tg1")


async def next_change(it, timeout: float = 10.0):
    return await asyncio.wait_for(it.__anext__(), timeout)


async def test_our_own_writes_do_not_come_back_through_the_watch_but_another_replicas_do(nc, nats_server, fresh_prefix):
    subjects = Subjects(fresh_prefix)
    ours = await KVStore(nc.jetstream(), subjects).open()
    nc2 = await nats.connect(nats_server.url)
    try:
        theirs = await KVStore(nc2.jetstream(), subjects).open()
        it = ours.watch()
        assert await next_change(it) is None  # no initial values: the bucket is new
        # the echo filter sits on the subscription nats-py's read loop really delivers to
        hooked = [s for s in nc._subs.values() if getattr(s._cb, "__wrapped_watch__", False)]
        assert len(hooked) == 1, "the bucket watch's echo filter is not installed (nats-py changed?)"

        mine_rev = await ours.save(unit("u-ours"))
        their_rev = await theirs.save(unit("u-theirs"))
        assert their_rev > mine_rev  # so our echo, had it come, would have come first
        change = await next_change(it)
        assert isinstance(change, UnitRec)
        assert (change.id, change.rev) == ("u-theirs", their_rev)
        assert mine_rev not in ours._mine  # dropped on arrival, and forgotten
    finally:
        await nc2.close()


async def test_a_stored_publish_is_acknowledged_and_one_without_a_stream_is_refused(nc, fresh_prefix):
    subjects = Subjects(fresh_prefix)
    js = nc.jetstream()
    await ensure_streams(js, subjects)
    bus = JetStreamBus(js)
    ack = await (await bus.publish(subjects.reply("u1"), b"{}", "m-1"))
    assert ack["seq"] >= 1 and not ack.get("duplicate")
    again = await (await bus.publish(subjects.reply("u1"), b"{}", "m-1"))
    assert again.get("duplicate") is True and again["seq"] == ack["seq"]
    with pytest.raises(PublishRefused, match="no stream answered"):
        await asyncio.wait_for(await bus.publish(f"{fresh_prefix}.nowhere", b"{}", "m-2"), 5.0)


async def test_a_publish_whose_acknowledgement_never_comes_fails_after_the_timeout(nc, fresh_prefix):
    # a plain subscriber takes the message and never answers: the acknowledgement is lost, as when
    # the connection drops after the publish
    subject = f"{fresh_prefix}.silent"
    async def silent(msg) -> None:
        pass

    await nc.subscribe(subject, cb=silent)
    bus = JetStreamBus(nc.jetstream(), ack_timeout_s=0.2)
    t0 = time.monotonic()
    fut = await bus.publish(subject, b"{}", "m-3")
    with pytest.raises(TimeoutError, match="no acknowledgement"):
        await asyncio.wait_for(fut, 5.0)
    assert time.monotonic() - t0 >= 0.2
    assert not bus._waiting  # nothing left behind


class _LoseAnswers(dict):
    """KVStore._waiting that loses every answer while `losing` (as a dropped connection would)."""

    losing = True
    lost = 0

    def pop(self, token, default=None):
        entry = super().pop(token, default)
        if entry is not None and self.losing:
            self.lost += 1
            return None  # the write is done (or refused) by the bucket; the writer never hears of it
        return entry


async def test_a_write_whose_answer_is_lost_but_which_was_stored_counts_as_written(nc, fresh_prefix):
    store = await KVStore(nc.jetstream(), Subjects(fresh_prefix), timeout_s=0.3).open()
    first = await store.save(unit("u1"))
    store._waiting = lossy = _LoseAnswers()
    rec = (await store.get(UnitRec, "u1")).model_copy(update={"state": UnitState.off_duty})
    rev = await store.save(rec)  # no answer: the key is read back, and it holds our write
    assert lossy.lost == 1 and rev > first
    assert (await store.get(UnitRec, "u1")).state is UnitState.off_duty
    assert rev in store._mine, "noted as ours, so the watch does not bring it back"
    # a write the bucket refused (a stale revision) whose answer is lost too: still a failure
    with pytest.raises(TimeoutError):
        await store.save(rec.model_copy(update={"rev": first, "state": UnitState.busy}))
    assert lossy.lost == 2
    assert (await store.get(UnitRec, "u1")).state is UnitState.off_duty


def incident(iid: str, unit_id: str | None = None) -> IncidentRec:
    return IncidentRec.model_validate({
        "id": iid, "kind": "theft", "priority": 2, "state": "assigned" if unit_id else "resolved",
        "place": {"lat": 30.2, "lon": 114.9}, "opened_at": "2026-11-30T18:00:00Z",
        "last_alert_at": "2026-11-30T18:00:00Z", "updated_at": "2026-11-30T18:00:00Z", "unit": unit_id,
    })


async def test_an_atomic_write_stores_every_record_or_none_of_them(nc, nats_server, fresh_prefix):
    subjects = Subjects(fresh_prefix)
    store = await KVStore(nc.jetstream(), subjects).open()
    assert store.atomic, "this nats-server takes atomic batches on the state bucket"
    u = unit("u1")
    u = u.model_copy(update={"rev": await store.save(u.model_copy(update={"order": "o1", "incident": "i1"}))})
    i = incident("i1", "u1")
    i = i.model_copy(update={"rev": await store.save(i)})
    # the release and the incident's resolution, together: consecutive revisions, both stored
    released = u.model_copy(update={"order": None, "incident": None})
    resolved = i.model_copy(update={"state": IncidentState.resolved, "unit": None})
    revs = await store.save_atomic([released, resolved])
    assert revs[1] == revs[0] + 1 and revs[0] > i.rev
    assert set(revs) <= store._mine, "noted as ours, so the watch does not bring them back"
    assert (await store.get(UnitRec, "u1")).order is None
    assert (await store.get(IncidentRec, "i1")).rev == revs[1]
    # another replica wrote the incident meanwhile: the whole batch is refused, the unit untouched
    nc2 = await nats.connect(nats_server.url)
    try:
        theirs = await KVStore(nc2.jetstream(), subjects).open()
        fresh = await theirs.get(IncidentRec, "i1")
        await theirs.save(fresh.model_copy(update={"state": IncidentState.assigned, "unit": "u2"}))
    finally:
        await nc2.close()
    claim = released.model_copy(update={"rev": revs[0], "order": "o2", "incident": "i1"})
    stale = resolved.model_copy(update={"rev": revs[1], "state": IncidentState.assigned, "unit": "u1"})
    with pytest.raises(Conflict):
        await store.save_atomic([claim, stale])
    assert (await store.get(UnitRec, "u1")).order is None, "nothing of a refused batch is stored"
    assert (await store.get(IncidentRec, "i1")).unit == "u2"


async def test_an_atomic_write_whose_answer_is_lost_but_which_was_stored_counts_as_written(nc, fresh_prefix):
    store = await KVStore(nc.jetstream(), Subjects(fresh_prefix), timeout_s=0.3).open()
    a = unit("u1").model_copy(update={"rev": await store.save(unit("u1"))})
    b = incident("i1")
    store._waiting = lossy = _LoseAnswers()
    revs = await store.save_atomic([a.model_copy(update={"state": UnitState.off_duty}), b])
    assert lossy.lost == 1 and revs[1] > revs[0] > a.rev
    assert (await store.get(UnitRec, "u1")).state is UnitState.off_duty
