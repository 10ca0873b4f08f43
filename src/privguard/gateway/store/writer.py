"""Group commit of the query log, off the request path but durable.

Requests hand their log row to :class:`LogWriter` and await it. One background thread takes
every row waiting in the queue, writes them in **one transaction** and commits, then wakes the
requests of that batch; only then does a request send its answer. So

- every request answered 200 has its row committed before the client saw the answer (a crash,
  even ``kill -9``, loses only requests that were never answered), and
- under load the database sees one commit per batch, not per request: while one batch commits,
  the next accumulates.

The hand-off is batched at both ends, because a thread hop costs about as much CPU as a small
request: rows handed over during one turn of the event loop reach the thread as one list (one
queue put, one wake-up), and a committed batch wakes its event loop once
(``call_soon_threadsafe`` per loop, not per row). The thread keeps one database connection
between batches instead of checking one out of the pool per transaction; after a failed batch
it closes it and opens a fresh one for the next.

This is the classic group commit of database logs (DeWitt et al., "Implementation techniques
for main memory database systems", SIGMOD 1984), applied to the application's own log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from privguard.gateway.store.db import Store
from privguard.gateway.store.models import QueryInput, QueryLog

log = logging.getLogger("privguard.gateway")

_STOP = object()


@dataclass
class _Item:
    row: dict[str, Any]
    inputs: list[dict[str, Any]]
    future: asyncio.Future | None
    loop: asyncio.AbstractEventLoop | None
    charge: Charge | None = None


@dataclass(frozen=True)
class Charge:
    """Records to charge to a key's daily budget in the transaction that logs its answer
    (budgets in the database, no Redis): ``refused`` replaces the row's status and outputs when
    they do not fit, so an answer is logged, charged and sent, or refused and logged as such."""

    key_id: str
    day: str
    n: int
    budget: int
    refused: dict[str, Any]


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
        self.max_batch = max(1, int(max_batch))
        self.on_commit = on_commit
        self.stats = WriterStats()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # lists of _Item, or _STOP
        self._staged: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._count_lock = threading.Lock()
        self._queued = 0  # rows put on the queue
        self._done = 0  # rows the thread has finished with (committed or failed)
        self._thread: threading.Thread | None = None
        self._conn: Connection | None = None  # the thread's own, between batches
        self._insert_rows = insert(QueryLog)
        self._insert_inputs = insert(QueryInput)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="privguard-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the thread."""
        if self._thread is not None:
            for loop in list(self._staged):
                self._flush(loop)
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    @property
    def pending(self) -> int:
        """Rows handed over and not yet committed."""
        staged = sum(len(items) for items in list(self._staged.values()))
        return max(0, self._queued - self._done) + staged

    async def write(
        self,
        row: dict[str, Any],
        inputs: list[dict[str, Any]] | None = None,
        *,
        charge: Charge | None = None,
    ) -> tuple[bool, int] | None:
        """Queue ``row`` and return once its batch is committed; raises if the commit failed.
        With ``charge``: (charged, records used today), the charge made in the same transaction
        (refused: the row was logged with ``charge.refused`` instead, without its inputs)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._stage(loop, _Item(row, inputs or [], fut, loop, charge))
        return await fut

    def submit(self, row: dict[str, Any], inputs: list[dict[str, Any]] | None = None) -> None:
        """Queue ``row`` without waiting (for refused requests: nothing was answered)."""
        item = _Item(row, inputs or [], None, None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: straight to the thread
            self._put([item])
            return
        self._stage(loop, item)

    def _stage(self, loop: asyncio.AbstractEventLoop, item: _Item) -> None:
        """Add ``item`` to this loop's list; the list goes to the thread at the loop's next turn,
        with every row staged until then."""
        staged = self._staged.get(loop)
        if staged is None:
            self._staged[loop] = [item]
            loop.call_soon(self._flush, loop)
        else:
            staged.append(item)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._staged.pop(loop, None)
        if items:
            self._put(items)

    def _put(self, items: list[_Item]) -> None:
        with self._count_lock:
            self._queued += len(items)
        self._queue.put(items)

    # -- the background thread -----------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        carry: list[_Item] = []
        while True:
            if carry:
                batch, carry = carry[: self.max_batch], carry[self.max_batch :]
            elif stopping:
                break
            else:
                first = self._queue.get()
                if first is _STOP:
                    break
                batch, carry = first[: self.max_batch], first[self.max_batch :]
            while not carry and not stopping and len(batch) < self.max_batch:
                try:
                    items = self._queue.get_nowait()
                except queue.Empty:
                    break
                if items is _STOP:
                    stopping = True
                    break
                room = self.max_batch - len(batch)
                batch.extend(items[:room])
                carry = items[room:]
            self._commit(batch)
        self._close_connection()

    def _commit(self, batch: list[_Item]) -> None:
        import time

        t0 = time.perf_counter()
        error: BaseException | None = None
        results: list[Any] = [None] * len(batch)
        try:
            self._write(batch, results)
            self.stats.commits += 1
            self.stats.rows += len(batch)
        except Exception as e:  # noqa: BLE001 - reported to each waiting request
            # the error's type only: its text would carry the statement (and, without
            # hide_parameters, the rows)
            log.error("audit log commit of %d rows failed: %s", len(batch), type(e).__name__)
            self.stats.failures += 1
            error = e
        with self._count_lock:
            self._done += len(batch)
        if self.on_commit is not None and error is None:
            self.on_commit(len(batch), time.perf_counter() - t0)
        waiting: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any]]] = {}
        for item, result in zip(batch, results, strict=True):
            if item.future is not None and item.loop is not None:
                waiting.setdefault(item.loop, []).append((item.future, result))
        for loop, futures in waiting.items():  # one wake-up per event loop, not per row
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle, futures, error)

    def _write(self, batch: list[_Item], results: list[Any]) -> None:
        """What :meth:`Store.write_queries` does — the rows, then the retained inputs, in one
        transaction — on the thread's own connection, after charging the budgets of the rows
        that carry a charge (in key order: concurrent workers' transactions lock budget rows in
        one order, so they cannot deadlock). A connection the database dropped is replaced and
        the batch tried once more (nothing of it was committed, or the retry fails on the
        duplicate key); any other failure closes the connection and is raised."""
        charged = sorted(
            (i for i, item in enumerate(batch) if item.charge is not None),
            key=lambda i: (batch[i].charge.key_id, batch[i].charge.day),
        )
        for attempt in range(2):
            if self._conn is None:
                self._conn = self.store.engine.connect()
            conn = self._conn
            try:
                refused = self._charge(conn, batch, charged, results)
                rows = [
                    {**item.row, **item.charge.refused} if i in refused else item.row
                    for i, item in enumerate(batch)
                ]
                inputs = [
                    r for i, item in enumerate(batch) if i not in refused for r in item.inputs
                ]
                if rows:
                    conn.execute(self._insert_rows, rows)
                if inputs:
                    conn.execute(self._insert_inputs, inputs)
                conn.commit()
                return
            except DBAPIError as e:
                self._close_connection()
                if attempt == 0 and e.connection_invalidated:
                    continue
                raise
            except BaseException:
                self._close_connection()
                raise

    def _charge(
        self, conn: Connection, batch: list[_Item], charged: list[int], results: list[Any]
    ) -> set[int]:
        """Charge the budgets of ``charged`` rows (in that order) on ``conn``; the rows refused.

        The rows of one key and day are charged with **one** conditional update of their total
        when it fits the budget: every row of a sequence whose total fits also fits one by one,
        so the outcome and the usage each row reports (``used`` before the group plus the
        records up to and including it) are those of one update per row, for a statement per
        key instead of per request. When the total does not fit, nothing was charged and the
        rows are charged one by one, in order (the budget's last records go to the first)."""
        refused: set[int] = set()
        j = 0
        while j < len(charged):
            c = batch[charged[j]].charge
            k = j + 1
            while k < len(charged):
                ck = batch[charged[k]].charge
                if (ck.key_id, ck.day, ck.budget) != (c.key_id, c.day, c.budget):
                    break
                k += 1
            group = charged[j:k]
            total = sum(batch[i].charge.n for i in group)
            ok = False
            if len(group) > 1 and total <= c.budget:
                ok, used = self.store.charge_budget_in(conn, c.key_id, c.day, total, c.budget)
                if ok:
                    before = used - total
                    for i in group:
                        before += batch[i].charge.n
                        results[i] = (True, before)
            if not ok:
                for i in group:
                    ci = batch[i].charge
                    results[i] = self.store.charge_budget_in(
                        conn, ci.key_id, ci.day, ci.n, ci.budget
                    )
                    if not results[i][0]:
                        refused.add(i)
            j = k
        return refused

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to save
                conn.rollback()
            with contextlib.suppress(Exception):
                conn.close()


def _settle(futures: list[tuple[asyncio.Future, Any]], error: BaseException | None) -> None:
    for fut, result in futures:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)
