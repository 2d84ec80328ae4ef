"""Small asyncio helpers every PatrolLink process shares."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

# Python 3.11's asyncio.wait_for can lose a cancellation that arrives just as the awaited thing
# finishes (CPython gh-86296, fixed in 3.12): nats-py's connect loop, retrying a refused server every
# half second inside wait_for, then never sees it and retries forever. A task still running after
# this long is cancelled again.
RECANCEL_S = 1.0
RECANCEL_TIMES = 10


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel background tasks and wait until each has ended; their exceptions are swallowed (they
    are stopping), but a cancellation of the caller itself still propagates. A task that is still
    running a second later is cancelled again (see RECANCEL_S); one that survives RECANCEL_TIMES
    cancellations is logged and left behind rather than hanging the caller's shutdown."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    for _ in range(RECANCEL_TIMES):
        if not pending:
            break
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
    for t in pending:
        logging.getLogger(__name__).warning("a background task ignored %d cancellations and was left running: %r",
                                            RECANCEL_TIMES, t)
    # (collect their results, so that no "exception was never retrieved" is logged for them)
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()
