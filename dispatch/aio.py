"""Small asyncio helpers every PatrolLink process shares."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel background tasks and wait until each has ended; their exceptions are swallowed (they
    are stopping), but a cancellation of the caller itself still propagates."""
    tasks = list(tasks)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
