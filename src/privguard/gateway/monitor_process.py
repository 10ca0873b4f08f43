"""The query monitor's detectors in a child process of the gateway (issue 19).

The gateway answers from one event loop, and its log writer and its detectors run in threads of
the same interpreter. The detectors' work is many small numpy operations (distance products,
Shapiro-Wilk, rate tests, the feature projection) and each holds the interpreter lock: run in a
thread, a millisecond of detector work is a millisecond in which the event loop answers nobody.

:class:`MonitorProcess` runs them in **one child process** instead (``[monitor] runner =
"process"``, or ``"auto"`` on a machine with more cores than gateway workers; the default is
still the thread, :func:`runner_of` says why). The gateway's side does not change:
:class:`~privguard.gateway.watch.Observations` hands a round of queued batches, grouped by
client, to :meth:`observe`, one group at a time; the child runs ``Monitor.observe`` on them
(against the shared state in Redis when the gateway has one,
:class:`~privguard.gateway.watch.SharedStates`) and sends the findings back; the gateway acts on
them (holds, alert rows, webhook) in its own process, as before. One child per gateway worker,
one group at a time: batches are observed in the order they were answered, as in a thread.

- The child is ``python -m privguard.gateway.monitor_process``, started by the worker's event
  loop (not ``multiprocessing``: its ``spawn`` re-runs the parent's main script in the child,
  which for a user's own serving script without a ``__main__`` guard would start a second
  server). It talks to the worker over its stdin and stdout (its own prints go to stderr) in
  length-prefixed messages of a JSON header and raw numpy buffers (dtype and shape in the
  header; object dtypes refused) -- no pickle, as nowhere in privguard. It first receives the
  fitted monitor in its saved form (:meth:`Monitor.to_bytes <privguard.gateway.monitor.
  monitor.Monitor.to_bytes>`, checked on arrival as a saved monitor is) and the fingerprint
  key; every client's state starts empty, as after a restart. The worker reports ready only
  once the child has loaded it.
- Each group travels as its arrays (a 64-record batch of 64 features: about 20 kB); the
  findings come back as JSON (``Finding.to_dict``). The worker's event loop writes and reads
  the pipes itself: no thread hop per round.
- If the child dies (killed, out of memory), the group it held fails (counted as failed
  batches, ``privguard_monitor_failed``), a new child is started for the next group, and the
  clients' in-process states start again empty (with Redis, they are in Redis and survive).
  A child that is not ready within :data:`START_TIMEOUT` seconds is an error at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("privguard.gateway")

#: the runners ``[monitor] runner`` accepts
RUNNERS = ("process", "thread")
#: the version of the messages between worker and child (a child of a newer or older
#: privguard, installed while the gateway ran, is refused at start)
PROTOCOL = 1
#: seconds a round of queued batches waits for more before going to the child: at batch 1
#: a round's trip (encoding, pipe, wake-ups) costs about as much as the detectors themselves
PROCESS_LINGER = 0.002
#: seconds the child may take to start and load the monitor
START_TIMEOUT = 120.0
#: seconds one group may take in the child before the child is taken for hung (and replaced)
GROUP_TIMEOUT = 60.0
#: after a child failed to start, seconds before another is tried (groups fail meanwhile)
RETRY_SECONDS = 30.0
#: a round is sent in parts of at most this many bytes of arrays (the event loop copies them)
CHUNK_BYTES = 4 << 20
#: the largest reply the worker reads (a corrupt length prefix must not make it wait forever)
MAX_REPLY_BYTES = 256 << 20
_HEADER = struct.Struct("<Q")


class MonitorProcessError(RuntimeError):
    """The detectors' child process died, hung or failed to start; the group it held is lost."""


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
        # checked here, so that a monitor the child could not rebuild fails at start-up (the
        # gateway then runs it in a thread), not at its first batch
        transferable(monitor)
        key = monitor.fingerprint_key
        header = {"redis_url": redis_url, "ttl": float(ttl), "fingerprint_key": key and key.hex()}
        blob = np.frombuffer(monitor.to_bytes(), dtype=np.uint8)
        self._hello = _pack(header, [blob])
        self._proc: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._retry_at = 0.0
        self.restarts = 0  # children started again after one died or hung

    @property
    def pid(self) -> int | None:
        """The child's process id (``None`` before it started)."""
        return None if self._proc is None else self._proc.pid

    async def started(self) -> int:
        """Start the child, unless one runs on this event loop, and wait until it holds the
        monitor (the gateway's start-up: a gateway that says it is ready has its detectors
        running); the child's process id."""
        if not self._alive():
            await self._start()
        assert self._proc is not None
        return self._proc.pid

    def _alive(self) -> bool:
        return (
            self._proc is not None
            and self._proc.returncode is None
            and self._loop is asyncio.get_running_loop()
        )

    async def _start(self) -> None:
        if self._proc is not None:  # a child that died, or one of another (closed) loop
            self.restarts += 1
            log.error("query monitor: its child process is gone; starting a new one")
        await self._kill()
        env = {**os.environ}
        # the child imports privguard from where this process does: nothing to add for an
        # installed package; a source tree's directory is appended to PYTHONPATH
        root = str(Path(__file__).resolve().parents[2])
        if root not in _site_dirs():
            path = env.get("PYTHONPATH")
            env["PYTHONPATH"] = (path + os.pathsep if path else "") + root
        # one BLAS/OpenMP thread: the worker's own process keeps the other core
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",  # never import from the working directory
            "-m",
            "privguard.gateway.monitor_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # its own session: a Ctrl-C or a service manager's SIGTERM to the gateway's group
            # must not kill it while the worker drains its queue; it ends at end of input
            start_new_session=True,
        )
        self._proc, self._loop, self._lock = proc, asyncio.get_running_loop(), asyncio.Lock()
        try:
            reply = await asyncio.wait_for(self._exchange(self._hello), START_TIMEOUT)
        except (MonitorProcessError, TimeoutError) as e:
            await self._kill()
            self._retry_at = time.monotonic() + RETRY_SECONDS
            raise MonitorProcessError(
                f"the query monitor's child process did not start ({type(e).__name__}); "
                "see the gateway's log above"
            ) from None
        if reply.get("kind") != "ready" or reply.get("protocol") != PROTOCOL:
            await self._kill()
            self._retry_at = time.monotonic() + RETRY_SECONDS
            raise MonitorProcessError(f"the query monitor's child answered {reply!r} at start")

    async def _exchange(self, payload: bytes) -> Any:
        """Send one message to the child and read its reply."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.writelines([_HEADER.pack(len(payload)), payload])
            await proc.stdin.drain()
            (n,) = _HEADER.unpack(await proc.stdout.readexactly(_HEADER.size))
            if n > MAX_REPLY_BYTES:
                raise MonitorProcessError(f"the query monitor's child sent a {n}-byte reply")
            data = await proc.stdout.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as e:
            raise MonitorProcessError(f"the query monitor's child process died ({e!r})") from None
        return _unpack(data)[0]

    async def observe(
        self,
        client: str,
        tier: str | None,
        account: str | None,
        batches: list[tuple[Any, Any, Any]],
    ) -> list[Any]:
        """The findings of ``client``'s ``batches`` [(x, labels, probs)], from the child, in
        parts of at most :data:`CHUNK_BYTES`. A dead or hung child fails this group
        (:class:`MonitorProcessError`) and is replaced for the next (not sooner than
        :data:`RETRY_SECONDS` after a child failed to start)."""
        if not self._alive():
            if time.monotonic() < self._retry_at:
                raise MonitorProcessError("the query monitor's child process failed to start")
            await self._start()  # not started, died, or started by another (closed) loop
        assert self._lock is not None
        from privguard.gateway.monitor.base import Finding

        findings = []
        async with self._lock:
            for part in _chunks(batches):
                try:
                    reply = await asyncio.wait_for(
                        self._exchange(_pack_group(client, tier, account, part)), GROUP_TIMEOUT
                    )
                except BaseException as e:  # died, hung, cancelled: its pipe is out of step
                    why = "hung" if isinstance(e, TimeoutError) else "failed"
                    if not isinstance(e, asyncio.CancelledError):
                        log.error("query monitor: its child process %s mid-round", why)
                    await self._kill()  # the next group starts a new one
                    self.restarts += 1
                    if isinstance(e, TimeoutError):
                        raise MonitorProcessError("the query monitor's child hung") from None
                    raise
                if reply.get("kind") != "ok":  # the detectors raised: the child goes on
                    raise MonitorProcessError(f"the query monitor raised {reply.get('error')}")
                findings += [Finding(**f) for f in reply["findings"]]
        return findings

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if self._loop is asyncio.get_running_loop():
            await proc.wait()

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the child: end of input, then wait for it (killed after ``timeout`` s)."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            self._proc = None
            return
        if self._loop is not asyncio.get_running_loop():  # its loop is gone: just kill it
            await self._kill()
            return
        self._proc = None
        assert proc.stdin is not None
        with contextlib.suppress(ConnectionError, BrokenPipeError):
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _site_dirs() -> set[str]:
    import site

    dirs = set(site.getsitepackages())
    with contextlib.suppress(AttributeError):
        dirs.add(site.getusersitepackages())
    return {str(Path(d).resolve()) for d in dirs}


def _chunks(batches: list[tuple[Any, Any, Any]]) -> list[list[tuple[Any, Any, Any]]]:
    """``batches`` in order, cut into parts of at most CHUNK_BYTES of arrays (one batch each
    at least)."""
    parts: list[list[tuple[Any, Any, Any]]] = [[]]
    size = 0
    for b in batches:
        n = sum(np.asarray(a).nbytes for a in b if a is not None)
        if parts[-1] and size + n > CHUNK_BYTES:
            parts.append([])
            size = 0
        parts[-1].append(b)
        size += n
    return parts


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container's limit) when one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    with contextlib.suppress(OSError, ValueError):  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, -(-int(quota) // int(period))))
    return n


def runner_of(monitor_config: dict[str, Any] | None, workers: int = 1) -> str:
    """Where ``[monitor] runner`` puts the detectors: ``process`` or ``thread`` (the default).
    ``auto`` is ``process`` when this machine has more usable cores (:func:`usable_cpus`) than
    the gateway has workers on it -- a core the workers leave free for the children -- and
    ``thread`` when it has not: a child would only take CPU from the workers, plus its own
    overhead (measured: docs/benchmarks.md). ``workers``: as ``privguard serve --workers``
    tells it (a gateway started by other means counts as one worker).

    The thread is the default because of what a client gets before its hold lands: in a
    thread the detectors hold the interpreter lock, so a client's next request is served after
    its previous batch was observed, nearly always; a child observes in parallel, and under CPU
    contention a client sending one request at a time got two more batches answered before its
    throttle (tests/gateway/test_dashboard.py: 96 records where the thread allowed 32 or 64)."""
    runner = check_runner((monitor_config or {}).get("runner", "thread"))
    if runner == "auto":
        return "process" if usable_cpus() > max(1, int(workers)) else "thread"
    return runner


def check_runner(runner: Any) -> str:
    """``runner`` if it is a ``[monitor] runner`` value, else a one-line ConfigError."""
    from privguard.errors import ConfigError

    if runner not in (*RUNNERS, "auto"):
        raise ConfigError(
            '[monitor] runner must be "thread" (the default: in the gateway\'s own process), '
            '"process" (the detectors in a child process) or "auto" (a child process when the '
            f"machine has more cores than workers), not {runner!r}"
        )
    return runner


def transferable(monitor: Any) -> None:
    """Raise ``ValueError`` (why) when the child could not rebuild ``monitor`` exactly: an
    injected clock (the child's is ``time.time``) or a detector it does not know by name."""
    from privguard.gateway.monitor.monitor import DETECTORS, Monitor

    if type(monitor) is not Monitor:  # a subclass would come back as a plain Monitor
        raise ValueError(f"a {type(monitor).__name__} is not privguard's own Monitor")
    if getattr(sys, "frozen", False):  # sys.executable is the frozen program, not Python
        raise ValueError("a frozen program cannot start python -m for the child")
    if monitor.clock is not time.time:
        raise ValueError("the monitor has its own clock")
    for det in getattr(monitor, "detectors", []):
        if DETECTORS.get(det.name) is not type(det):
            raise ValueError(f"detector {det.name!r} is not one privguard can rebuild by name")


# -- the messages: a JSON header and raw numpy buffers, no pickle -------------------------------


def json_plain(o: Any) -> Any:
    """``json.dumps``'s ``default`` for findings' evidence: numpy scalars and arrays as plain
    values, anything else as its text (the gateway's alert rows use it too)."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _pack(header: dict[str, Any], arrays: Sequence[np.ndarray] = ()) -> bytes:
    """A message: the header's JSON (with each array's dtype and shape), then the arrays."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    specs = [[a.dtype.str, list(a.shape)] for a in arrays]
    head = json.dumps({**header, "arrays": specs}, default=json_plain).encode()
    return _HEADER.pack(len(head)) + head + b"".join(a.tobytes() for a in arrays)


def _unpack(data: bytes) -> tuple[dict[str, Any], list[np.ndarray]]:
    (n,) = _HEADER.unpack_from(data, 0)
    header = json.loads(data[_HEADER.size : _HEADER.size + n])
    pos = _HEADER.size + n
    arrays = []
    for dtype_str, shape in header.pop("arrays"):
        dtype = np.dtype(dtype_str)
        if dtype.hasobject:
            raise ValueError("a message with an object array")
        count = int(np.prod(shape, dtype=np.int64))
        a = np.frombuffer(data, dtype=dtype, count=count, offset=pos).reshape(shape).copy()
        arrays.append(a)
        pos += count * dtype.itemsize
    return header, arrays


def _pack_group(
    client: str, tier: str | None, account: str | None, batches: list[tuple[Any, Any, Any]]
) -> bytes:
    arrays: list[np.ndarray] = []
    for x, labels, probs in batches:
        arrays += [np.asarray(x), np.asarray(labels)]
        if probs is not None:
            arrays.append(np.asarray(probs))
    header = {
        "client": client,
        "tier": tier,
        "account": account,
        "probs": [probs is not None for _, _, probs in batches],
    }
    return _pack(header, arrays)


def _unpack_group(data: bytes) -> tuple[str, str | None, str | None, list[tuple[Any, Any, Any]]]:
    header, arrays = _unpack(data)
    it = iter(arrays)
    batches = [(next(it), next(it), next(it) if has else None) for has in header["probs"]]
    return header["client"], header["tier"], header["account"], batches


# -- the child ---------------------------------------------------------------------------------


def _read(stream: Any) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None  # end of input: the worker closed the pipe
    (n,) = _HEADER.unpack(head)
    return stream.read(n)


def _write(stream: Any, header: dict[str, Any]) -> None:
    data = _pack(header)
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
    from privguard.gateway.monitor.monitor import Monitor

    header, (blob,) = _unpack(hello)
    monitor = Monitor.from_bytes(blob.tobytes())
    if header["fingerprint_key"]:
        monitor.use_fingerprint_key(bytes.fromhex(header["fingerprint_key"]))
    shared = None
    if header["redis_url"]:
        from privguard.gateway.watch import SharedStates

        shared = SharedStates(header["redis_url"], monitor, ttl=header["ttl"])
    _write(out, {"kind": "ready", "pid": os.getpid(), "protocol": PROTOCOL})
    while (msg := _read(inp)) is not None:
        try:
            client, tier, account, batches = _unpack_group(msg)
            if shared is not None:
                findings = shared.observe(client, batches, tier=tier, account=account)
            else:
                findings = []
                for b in batches:
                    findings += monitor.observe(client, *b, tier=tier, account=account)
            _write(out, {"kind": "ok", "findings": [f.to_dict() for f in findings]})
        except Exception as e:  # noqa: BLE001 - reported to the worker; the child goes on
            import traceback

            traceback.print_exc()  # to stderr: the gateway's log
            _write(out, {"kind": "error", "error": type(e).__name__})


if __name__ == "__main__":
    _serve()
