"""The query monitor's detectors in a child process of the gateway (issue 19).

The gateway answers from one event loop, and its log writer and its detectors run in threads of
the same interpreter. The detectors' work is many small numpy operations (distance products,
Shapiro-Wilk, rate tests, the feature projection) and each holds the interpreter lock: run in a
thread, a millisecond of detector work is a millisecond in which the event loop answers nobody.

:class:`MonitorProcess` runs them in **one child process** instead (``[monitor] runner =
"process"``, or the default ``"auto"`` on a machine with more cores than gateway workers:
:func:`runner_of`). The gateway's side does not change: :class:`~privguard.gateway.watch.
Observations` hands a round of queued batches, grouped by client, to :meth:`observe`, one group
at a time; the child runs ``Monitor.observe`` on them (against the shared state in Redis when
the gateway has one, :class:`~privguard.gateway.watch.SharedStates`) and sends the findings
back; the gateway acts on them (holds, alert rows, webhook) in its own process, as before. One
child per gateway worker, one group at a time: batches are observed in the order they were
answered, as in a thread.

- The child is ``python -m privguard.gateway.monitor_process``, started by the worker's event
  loop (not ``multiprocessing``: its ``spawn`` re-runs the parent's main script in the child,
  which for a user's own serving script without a ``__main__`` guard would start a second
  server). It talks to the worker over its stdin and stdout (its own prints go to stderr):
  length-prefixed pickles of privguard's own objects, between a process and the child it
  started; nothing is read from a file. It first receives the monitor's picklable state
  (:meth:`Monitor.__getstate__ <privguard.gateway.monitor.monitor.Monitor.__getstate__>`: the
  fitted detectors and the fingerprint key; every client's state starts empty, as after a
  restart), loads it, and says so; the worker reports ready only then.
- Each group travels as pickled numpy arrays (a 64-record batch of 64 features: about 20 kB);
  the findings come back the same way. The worker's event loop writes and reads the pipes
  itself: no thread hop per round.
- If the child dies (killed, out of memory), the group it held fails (counted as failed
  batches, ``privguard_monitor_failed``), a new child is started for the next group, and the
  clients' in-process states start again empty (with Redis, they are in Redis and survive).
  A child that is not ready within :data:`START_TIMEOUT` seconds is an error at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("privguard.gateway")

#: the runners ``[monitor] runner`` accepts
RUNNERS = ("process", "thread")
#: seconds a round of queued batches waits for more before going to the child: at batch 1
#: a round's trip (pickle, pipe, wake-ups) costs about as much as the detectors themselves
PROCESS_LINGER = 0.002
#: seconds the child may take to start and load the monitor
START_TIMEOUT = 120.0
_HEADER = struct.Struct("<Q")


class MonitorProcessError(RuntimeError):
    """The detectors' child process died or failed to start; the group it held is lost."""


class MonitorProcess:
    """The monitor's detectors in one child process (``[monitor] runner``: :func:`runner_of`).

    Example:
        >>> runner = MonitorProcess(monitor, redis_url=None)
        >>> await runner.started()                           # the child's pid, once it watches
        >>> await runner.observe("alice", "free", None, [(x, labels, probs)])
        [Finding(detector='ood', ...)]
        >>> await runner.aclose()
    """

    def __init__(self, monitor: Any, redis_url: str | None = None, ttl: float = 0.0) -> None:
        # pickled here, so that a monitor that cannot cross a process boundary (a test's
        # injected clock, say) fails at start-up, not at its first batch
        self._hello = pickle.dumps((monitor, redis_url, float(ttl)))
        self._proc: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self.restarts = 0  # children started again after one died

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before it started)."""
        return None if self._proc is None else self._proc.pid

    async def started(self) -> int:
        """Start the child and wait until it holds the monitor (the gateway's start-up: a
        gateway that says it is ready has its detectors running); the child's process id."""
        await self._start()
        assert self._proc is not None
        return self._proc.pid

    async def _start(self) -> None:
        # the child imports privguard from where this process does
        root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}
        # one BLAS/OpenMP thread: the worker's own process keeps the other core
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "privguard.gateway.monitor_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
        )
        self._proc, self._loop, self._lock = proc, asyncio.get_running_loop(), asyncio.Lock()
        try:
            reply = await asyncio.wait_for(self._exchange(self._hello), START_TIMEOUT)
        except (MonitorProcessError, TimeoutError) as e:
            await self._kill()
            raise MonitorProcessError(
                f"the query monitor's child process did not start ({type(e).__name__}); "
                "see the gateway's log above"
            ) from None
        if reply != ("ready", proc.pid):
            await self._kill()
            raise MonitorProcessError(f"the query monitor's child answered {reply!r} at start")

    async def _exchange(self, payload: bytes) -> Any:
        """Send one message to the child and read its reply."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            await proc.stdin.drain()
            (n,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
            data = await proc.stdout.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as e:
            raise MonitorProcessError(f"the query monitor's child process died ({e!r})") from None
        return pickle.loads(data)  # noqa: S301 - the reply of the child this process started

    async def observe(
        self,
        client: str,
        tier: str | None,
        account: str | None,
        batches: list[tuple[Any, Any, Any]],
    ) -> list[Any]:
        """The findings of ``client``'s ``batches`` [(x, labels, probs)], from the child. A
        dead child fails this group (:class:`MonitorProcessError`) and is replaced for the
        next."""
        if self._proc is None or self._loop is not asyncio.get_running_loop():
            await self._start()  # not started, or started by another (closed) event loop
        assert self._lock is not None
        async with self._lock:
            try:
                reply = await self._exchange(pickle.dumps((client, tier, account, batches)))
            except MonitorProcessError:
                log.error("query monitor: its child process died; starting a new one")
                self.restarts += 1
                await self._kill()
                self._proc = None  # the next group starts a new child
                raise
        kind, value = reply
        if kind == "error":  # the detectors raised: this group fails, the child goes on
            raise MonitorProcessError(f"the query monitor raised {value}")
        return value

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the child: end of input, then wait for it (killed after ``timeout`` s)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        if self._loop is not asyncio.get_running_loop():  # its loop is gone: just kill it
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            return
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def runner_of(monitor_config: dict[str, Any] | None, workers: int = 1) -> str:
    """Where ``[monitor] runner`` puts the detectors: ``process`` or ``thread``. ``auto`` (the
    default) is ``process`` when this machine has more usable cores than the gateway has
    workers on it -- a child then has a core the workers do not use -- and ``thread`` when it
    has not: a child would only take CPU from the workers, plus its own overhead (measured:
    docs/benchmarks.md, "Gateway throughput, detectors in a child process")."""
    from privguard.errors import ConfigError

    runner = (monitor_config or {}).get("runner", "auto")
    if runner not in (*RUNNERS, "auto"):
        raise ConfigError(
            '[monitor] runner must be "auto" (the default: a child process when the machine '
            'has a core per worker to spare), "process" (the detectors in a child process) '
            f'or "thread" (in the gateway\'s own process), not {runner!r}'
        )
    if runner == "auto":
        return "process" if usable_cpus() > max(1, int(workers)) else "thread"
    return runner


# -- the child ---------------------------------------------------------------------------------


def _read(stream: Any) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None  # end of input: the worker closed the pipe
    (n,) = _HEADER.unpack(head)
    return stream.read(n)


def _write(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _serve() -> None:
    """The child: read the monitor, then one group at a time, until the worker closes stdin."""
    # the protocol owns stdout: anything printed (a library's warning) goes to stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inp = sys.stdin.buffer
    hello = _read(inp)
    if hello is None:
        return
    monitor, redis_url, ttl = pickle.loads(hello)  # noqa: S301 - from the worker that started us
    shared = None
    if redis_url:
        from privguard.gateway.watch import SharedStates

        shared = SharedStates(redis_url, monitor, ttl=ttl)
    _write(out, ("ready", os.getpid()))
    while (msg := _read(inp)) is not None:
        client, tier, account, batches = pickle.loads(msg)  # noqa: S301 - as above
        try:
            if shared is not None:
                findings = shared.observe(client, batches, tier=tier, account=account)
            else:
                findings = []
                for b in batches:
                    findings += monitor.observe(client, *b, tier=tier, account=account)
            _write(out, ("ok", findings))
        except Exception as e:  # noqa: BLE001 - reported to the worker; the child goes on
            _write(out, ("error", type(e).__name__))


if __name__ == "__main__":
    _serve()
