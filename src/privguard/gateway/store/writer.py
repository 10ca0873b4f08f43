"""Group commit of the query log, off the request path but durable.

Requests hand their log row to :class:`LogWriter` and await it. One background thread takes
every row waiting in the queue, writes them in **one transaction** and commits, then wakes each
request of that batch; only then does the request send its answer. So

- every request answered 200 has its row committed before the client saw the answer (a crash,
  even ``kill -9``, loses only requests that were never answered), and
- under load the database sees one commit per batch, not per request: while one batch commits,
  the next accumulates.

This is the classic group commit of database logs (DeWitt et al., "Implementation techniques
for main memory database systems", SIGMOD 1984), applied to the application's own log.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from privguard.gateway.store.db import Store

log = logging.getLogger("privguard.gateway")

_STOP = object()


@dataclass
class _Item:
    row: dict[str, Any]
    inputs: list[dict[str, Any]]
    future: asyncio.Future | None
    loop: asyncio.AbstractEventLoop | None


@dataclass
class WriterStats:
    commits: int = 0
    rows: int = 0
    failures: int = 0


class LogWriter:
    """Batches log rows from concurrent requests into one transaction per batch.

    Example:
        >>> writer = LogWriter(store); writer.start()
        >>> await writer.write(row)        # returns once the row is committed
        >>> writer.stop()                  # drains the queue, then returns
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 512,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.on_commit = on_commit
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="privguard-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def write(self, row: dict[str, Any], inputs: list[dict[str, Any]] | None = None) -> None:
        """Queue ``row`` and return once its batch is committed; raises if the commit failed."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put(_Item(row, inputs or [], fut, loop))
        await fut

    def submit(self, row: dict[str, Any], inputs: list[dict[str, Any]] | None = None) -> None:
        """Queue ``row`` without waiting (for refused requests: nothing was answered)."""
        self._queue.put(_Item(row, inputs or [], None, None))

    # -- the background thread -----------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[_Item]) -> None:
        import time

        t0 = time.perf_counter()
        error: BaseException | None = None
        try:
            self.store.write_queries([i.row for i in batch], [r for i in batch for r in i.inputs])
            self.stats.commits += 1
            self.stats.rows += len(batch)
        except Exception as e:  # noqa: BLE001 - reported to each waiting request
            log.error("audit log commit of %d rows failed: %s", len(batch), e)
            self.stats.failures += 1
            error = e
        if self.on_commit is not None and error is None:
            self.on_commit(len(batch), time.perf_counter() - t0)
        for item in batch:
            if item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_settle, item.future, error)


def _settle(fut: asyncio.Future, error: BaseException | None) -> None:
    if fut.done():  # the request was cancelled (client went away)
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
