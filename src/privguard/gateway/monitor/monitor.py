"""The monitor: every detector's state for every client, behind one ``observe`` call.

The gateway calls :meth:`Monitor.observe` for each answered batch (after the answer is computed)
and acts on the findings it returns. The monitor

- holds per-client state for each detector, bounded per client by the detectors' windows and
  buffers and bounded in number by ``max_clients`` (least recently seen clients are forgotten);
- is thread-safe: one lock guards the client table, one lock per client serialises that client's
  updates, so different clients are observed concurrently;
- maps each finding to an action (``record``, ``alert``, ``throttle``, ``block``) by detector,
  overridable per tier;
- is calibrated by :meth:`Monitor.fit` on the training inputs (the feature space and the
  out-of-distribution score) and benign held-out records (every threshold), and saved next to the
  model as ``monitor.json`` + ``monitor.npz`` -- no pickle.

Example:
    >>> monitor = Monitor().fit(x_train, x_heldout, target.predict_proba)
    >>> monitor.save("model-dir")
    >>> findings = Monitor.load("model-dir").observe("alice", x, labels, probs)
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from privguard._io import atomic_write_bytes as _atomic_write
from privguard.errors import ConfigError, DataError, ModelError
from privguard.gateway.monitor.base import (
    ACTIONS,
    Batch,
    Detector,
    FeatureSpace,
    Finding,
    Progress,
    Stream,
    check_action,
)
from privguard.gateway.monitor.boundary import BoundaryDetector
from privguard.gateway.monitor.copies import CopiesDetector
from privguard.gateway.monitor.knn import RecentQueries, with_neighbours
from privguard.gateway.monitor.lowdensity import LowDensityDetector
from privguard.gateway.monitor.ood import OodDetector
from privguard.gateway.monitor.prada import PradaDetector
from privguard.gateway.monitor.similarity import SimilarityDetector
from privguard.gateway.monitor.state import StateError
from privguard.gateway.monitor.state import decode as decode_state
from privguard.gateway.monitor.state import encode as encode_state
from privguard.gateway.monitor.volume import VolumeDetector

FORMAT_VERSION = 1
JSON_NAME = "monitor.json"
NPZ_NAME = "monitor.npz"

DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (
        PradaDetector,
        SimilarityDetector,
        BoundaryDetector,
        OodDetector,
        VolumeDetector,
        CopiesDetector,
        LowDensityDetector,
    )
}
DEFAULT_ACTIONS = {
    "prada": "alert",
    "similarity": "throttle",
    "boundary": "alert",
    "ood": "record",
    "volume": "throttle",
    "copies": "alert",
    "lowdensity": "alert",
}
ACCOUNT_PREFIX = "account:"  # the monitor's state key for an account (keys sharing an owner)


def scopes(client: str, account: str | None) -> list[tuple[str, str | None]]:
    """The states one batch updates: the client's own and, when its key has an owner, the
    owner's account state (``(state name, account)`` pairs, the client's first)."""
    out: list[tuple[str, str | None]] = [(client, None)]
    if account:
        out.append((ACCOUNT_PREFIX + account, account))
    return out


class ClientState:
    """One client's state: each detector's, the shared recent-query buffer and the number of
    queries seen. Shared through Redis as bytes (:meth:`Monitor.dump_state`)."""

    __slots__ = ("lock", "queries", "recent", "states")

    def __init__(self, states: dict[str, Any], recent: RecentQueries | None) -> None:
        self.lock = threading.Lock()
        self.queries = 0
        self.states = states
        self.recent = recent


class Monitor:
    """Per-client attack detection over the gateway's answered queries.

    Args:
        detectors: the detectors to run (default: one of each registered kind, default settings).
        actions: detector name -> action, over :data:`DEFAULT_ACTIONS`.
        tier_actions: tier -> {detector name -> action}, overriding ``actions`` for that tier.
        max_clients: clients whose state is kept; the least recently seen is forgotten first.
        n_components: dimensions of the PCA feature space.
        target_fpr: share of benign clients (of each detector's ``stream_len`` queries) the
            calibration allows to be flagged, per detector.
        clock: seconds since the epoch (``time.time``); tests and benchmarks inject their own.
    """

    def __init__(
        self,
        detectors: list[Detector] | None = None,
        *,
        actions: dict[str, str] | None = None,
        tier_actions: dict[str, dict[str, str]] | None = None,
        max_clients: int = 1000,
        n_components: int = 64,
        target_fpr: float = 0.01,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if detectors is None:
            detectors = [cls() for cls in DETECTORS.values()]
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ConfigError(f"each detector may appear once; got {names}")
        if max_clients < 1 or n_components < 1 or not 0 < target_fpr < 1:
            raise ConfigError("max_clients and n_components must be >= 1, target_fpr in (0, 1)")
        self.detectors = detectors
        self.actions = {**DEFAULT_ACTIONS, **(actions or {})}
        for name, action in self.actions.items():
            check_action(action, f"action for {name}")
        self.tier_actions = {t: dict(m) for t, m in (tier_actions or {}).items()}
        for tier, mapping in self.tier_actions.items():
            for name, action in mapping.items():
                check_action(action, f"tier {tier!r}, detector {name}")
        self.max_clients = int(max_clients)
        self.n_components = int(n_components)
        self.target_fpr = float(target_fpr)
        self.clock = clock
        self.space_: FeatureSpace | None = None
        self.input_shape_: tuple[int, ...] | None = None
        self.calibration_: dict[str, Any] = {}
        self._clients: OrderedDict[str, ClientState] = OrderedDict()
        self._lock = threading.Lock()
        self._fingerprinter: Callable[[np.ndarray], list[str]] | None = None
        self._fingerprint_key: bytes | None = None
        self._identity: str | None = None

    @property
    def fingerprint_key(self) -> bytes | None:
        """The key of :meth:`use_fingerprint_key` (``None``: fingerprints under a random key)."""
        return self._fingerprint_key

    def use_fingerprint_key(self, key: bytes) -> Monitor:
        """Fingerprint the queries named in findings' evidence with ``key`` (the gateway's
        fingerprint key): keyed HMAC-SHA256, equal to the query log's fingerprints."""
        from privguard.gateway.inputs import Fingerprinter

        self._fingerprinter = Fingerprinter(key)
        self._fingerprint_key = bytes(key)
        return self

    # -- calibration ---------------------------------------------------------------------
    def fit(
        self,
        x_train: np.ndarray,
        x_benign: np.ndarray,
        predict_proba: Callable[[np.ndarray], np.ndarray],
        *,
        shuffles: int = 8,
        sorted_orders: int = 8,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> Monitor:
        """Fit the feature space on ``x_train`` (the model's training inputs) and calibrate every
        detector on benign query streams.

        Two kinds of benign stream are replayed. The out-of-distribution score is calibrated on
        ``x_benign`` alone (held-out records: training records score lower than new ones).
        The detectors whose statistics depend on how many queries a client has sent (the k-NN
        distances shrink as the buffer fills; PRADA's test sees more distances) are calibrated
        on streams as long as a real client's: the held-out records in their given order, the
        training and held-out records together in their given order (a client replaying a
        file: mnist-5k's is sorted by class), ``shuffles`` random orders of them (natural
        inputs either way; membership does not change what an input looks like), and
        ``sorted_orders`` *class-sorted* orders of them (grouped by the label the model answers,
        half with the classes in label order, half in a random order of the classes, random
        within a class): a benign client that queries one class at a time sends runs of
        near-duplicates that pixel-distance detectors otherwise take for probing (issue 19;
        measured on digits: PRADA flagged 6 of 10 class-sorted benign replays without them,
        none with 2). Eight by default (issue 19,
        mnist-5k): each detector's threshold is an extreme-value bound over each kind's streams
        (``base.extreme_bound``: a Gumbel law fitted to the streams' worst statistics, its
        ``1 - target_fpr`` quantile), which needs a few streams of a kind; with 2 sorted orders
        and "worst + 1" the similarity detector flagged 22 of 33 class-sorted mnist-5k clients.
        Sorted streams lower PRADA's threshold until PRADA no longer fires on a
        Jacobian-augmentation extraction, which the ``copies`` detector flags instead
        (docs/monitoring.md); ``sorted_orders=0`` restores the shuffled-only calibration.

        Args:
            x_train: ``(n, *input_shape)`` training inputs.
            x_benign: ``(m, *input_shape)`` benign held-out inputs, never trained on (at least
                20; a few hundred make the quantiles meaningful).
            predict_proba: the served model, ``x -> (n, classes)`` probabilities: the labels the
                benign clients would be answered.
            shuffles: random orders of the natural records replayed.
            sorted_orders: class-sorted orders of the natural records replayed.
            seed: seeds the shuffles and the PCA.
            progress: ``progress(step, done, total)`` callback.
        """
        x_train = _records(x_train, None, "x_train")
        self.input_shape_ = tuple(np.asarray(x_train).shape[1:])
        xt = x_train.reshape(len(x_train), -1)
        xb = _records(x_benign, self.input_shape_, "x_benign").reshape(len(x_benign), -1)
        if len(xb) < 20:
            raise DataError("the monitor needs at least 20 benign held-out records to calibrate")
        self.space_ = FeatureSpace.fit(xt, self.n_components, seed)

        def stream(x: np.ndarray) -> Stream:
            p = np.asarray(predict_proba(x.reshape(len(x), *self.input_shape_)), dtype=np.float64)
            if p.ndim != 2 or len(p) != len(x):
                raise DataError(
                    f"predict_proba returned shape {p.shape} for {len(x)} records; it must "
                    "return (n, classes) probabilities"
                )
            return Stream(x, self.space_.transform(x), p.argmax(axis=1).astype(np.int64), p)

        rng = np.random.default_rng(seed)
        heldout = stream(xb)
        heldout.kind = "natural"
        natural = np.concatenate([xt, xb])
        pooled = stream(natural)
        orders = [("shuffled", rng.permutation(len(natural))) for _ in range(shuffles)]
        # half of them with the classes in label order (a client walking the labels), half in
        # a random order of the classes
        n_labels = int(pooled.labels.max()) + 1
        ranks = [
            np.arange(n_labels) if i % 2 == 0 else rng.permutation(n_labels)
            for i in range(sorted_orders)
        ]
        orders += [
            ("class-sorted", np.lexsort((rng.random(len(natural)), r[pooled.labels])))
            for r in ranks
        ]
        pooled.kind = "natural"  # the records in the order given: a client replaying a file
        long = [heldout, pooled] + [
            Stream(pooled.x[o], pooled.z[o], pooled.labels[o], pooled.probs[o], kind)
            for kind, o in orders
        ]
        total = len(self.detectors)
        for i, det in enumerate(self.detectors):
            if hasattr(det, "bind"):
                det.bind(self.space_)
            det.calibrate([heldout] if det.heldout_only else long, self.target_fpr)
            if progress is not None:
                progress("calibrating detectors", i + 1, total)
        self.calibration_ = {
            "train_records": int(len(xt)),
            "benign_records": int(len(xb)),
            "natural_streams": len(long),
            "natural_stream_length": int(len(natural)),
            "class_sorted_streams": int(sorted_orders),
            "target_fpr": self.target_fpr,
            "feature_space": f"PCA, {self.space_.k} of {self.space_.n_features} dimensions",
        }
        self._identity = None
        self.reset()
        return self

    @property
    def fitted(self) -> bool:
        return self.space_ is not None

    # -- serving -------------------------------------------------------------------------
    def observe(
        self,
        client: str,
        x: np.ndarray,
        labels: np.ndarray,
        probs: np.ndarray | None = None,
        *,
        tier: str | None = None,
        account: str | None = None,
    ) -> list[Finding]:
        """Update ``client``'s state with one answered batch; the findings it raises.

        With ``account`` (the owner of the client's key), the batch also updates one state for
        the whole account, so that an attack split over several keys of one owner (sybil keys)
        is seen whole; the account's findings name the key that sent the batch and carry
        ``evidence["account"]``.

        Args:
            client: the client (key name) the batch came from.
            x: ``(n, *input_shape)`` or ``(n, d)`` inputs as the model received them.
            labels: ``(n,)`` the labels answered (``-1`` where the policy abstained).
            probs: ``(n, classes)`` the probabilities answered, or ``None``.
            tier: the client's tier, for per-tier actions.
            account: the owner of the client's key, if it has one.
        """
        prepared = self.prepare(x, labels, probs)
        if prepared is None:
            return []
        findings = []
        for name, acct in scopes(client, account):
            state = self._client(name)
            with state.lock:
                findings += self.observe_state(state, client, prepared, tier=tier, account=acct)
        return findings

    def prepare(self, x: np.ndarray, labels: np.ndarray, probs: np.ndarray | None = None) -> Any:
        """One answered batch checked and projected into the feature space, ready for
        :meth:`observe_state` (``None`` for an empty batch). Needs no client state, so the
        shared-state path (gateway/watch.py) does it once, outside its retry loop."""
        if self.space_ is None or self.input_shape_ is None:
            raise ConfigError("the monitor is not fitted; call Monitor.fit or Monitor.load")
        xf = _records(x, self.input_shape_, "x").reshape(len(x), -1)
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != len(xf):
            raise DataError(f"{len(labels)} labels for {len(xf)} queries")
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float64)
            if probs.ndim != 2 or len(probs) != len(xf):
                raise DataError(f"probs must be (n, classes) with n = {len(xf)}")
        if len(xf) == 0:
            return None
        return xf, self.space_.transform(xf), labels, probs

    def observe_state(
        self,
        state: ClientState,
        client: str,
        prepared: Any,
        *,
        tier: str | None = None,
        account: str | None = None,
    ) -> list[Finding]:
        """Update one ``state`` (this monitor's, or one loaded from shared storage by
        :meth:`load_state`) with a batch from :meth:`prepare`; the findings, which name
        ``client``. ``account``: the state is that account's (:func:`scopes`), and its findings
        carry ``evidence["account"]``. The caller serialises access to ``state``."""
        xf, z, labels, probs = prepared
        now = float(self.clock())
        findings = []
        batch = Batch(xf, z, labels, probs, state.queries, now, fingerprinter=self._fingerprinter)
        if state.recent is not None:
            with_neighbours(batch, state.recent)
        for det in self.detectors:
            f = det.observe(state.states[det.name], batch)
            if f is not None:
                f.client = client
                f.action = self.action_for(det.name, tier)
                f.evidence["time"] = now
                if account is not None:
                    f.evidence["account"] = account
                findings.append(f)
        if state.recent is not None:
            state.recent.add(z, labels, batch.z_sq)
        state.queries += len(xf)
        return findings

    # -- shared state (gateway/watch.py) ----------------------------------------------------
    def new_state(self) -> ClientState:
        """A fresh client's state: every detector's, the recent-query buffer, the count."""
        return self._new_client()

    def dump_state(self, state: ClientState) -> bytes:
        """``state`` as bytes, without pickle (monitor/state.py)."""
        return encode_state(
            {"queries": state.queries, "recent": state.recent, "states": state.states}
        )

    def load_state(self, blob: bytes) -> ClientState:
        """A client's state back from :meth:`dump_state`'s bytes; ``StateError`` when they do
        not fit this monitor's detectors."""
        fresh = self._new_client()
        tree = decode_state(blob, {"queries": 0, "recent": fresh.recent, "states": fresh.states})
        if not isinstance(tree, dict) or set(tree) != {"queries", "recent", "states"}:
            raise StateError("not a monitor client state")
        if set(tree["states"]) != set(fresh.states):
            raise StateError(f"states of {sorted(tree['states'])}, not {sorted(fresh.states)}")
        fresh.queries = int(tree["queries"])
        return fresh

    @property
    def identity(self) -> str:
        """A short hash of the fitted monitor (detectors, thresholds, feature space): shared
        states are keyed by it, so a re-fitted monitor never reads its predecessor's states."""
        if self._identity is None:
            if self.space_ is None:
                raise ConfigError("the monitor is not fitted; call Monitor.fit or Monitor.load")
            h = hashlib.sha256()
            params = [[d.name, d.params()] for d in self.detectors]
            h.update(json.dumps(params, sort_keys=True, default=str).encode())
            for name, arr in sorted(self.space_.arrays().items()):
                h.update(name.encode())
                h.update(np.ascontiguousarray(arr).tobytes())
            self._identity = h.hexdigest()[:16]
        return self._identity

    def action_for(self, detector: str, tier: str | None = None) -> str:
        if tier is not None and detector in self.tier_actions.get(tier, {}):
            return self.tier_actions[tier][detector]
        return self.actions.get(detector, "alert")

    def _client(self, client: str) -> ClientState:
        with self._lock:
            state = self._clients.get(client)
            if state is None:
                state = self._new_client()
                self._clients[client] = state
                while len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            return state

    def _new_client(self) -> ClientState:
        sizes = [getattr(d, "buffer", 0) for d in self.detectors if d.uses_recent]
        recent = RecentQueries(max(sizes), self.space_.k) if sizes and self.space_ else None
        return ClientState({d.name: d.new_state() for d in self.detectors}, recent)

    def reset(self, client: str | None = None) -> None:
        """Forget one client's state (``None``: every client's)."""
        with self._lock:
            if client is None:
                self._clients.clear()
            else:
                self._clients.pop(client, None)

    def clients(self) -> list[str]:
        """Clients with state, least recently seen first."""
        with self._lock:
            return list(self._clients)

    def state_bytes(self, client: str | None = None) -> int:
        """Bytes of detector state held for ``client`` (``None``: a fresh client's)."""
        with self._lock:
            state = self._clients.get(client) if client is not None else None
        state = state or self._new_client()
        recent = state.recent.nbytes if state.recent is not None else 0
        return recent + sum(d.state_bytes(state.states[d.name]) for d in self.detectors)

    def describe(self) -> dict[str, Any]:
        """Detectors, their calibrated thresholds and actions (JSON-safe)."""
        return {
            "detectors": {
                d.name: {"params": d.params(), "action": self.actions.get(d.name, "alert")}
                for d in self.detectors
            },
            "tier_actions": self.tier_actions,
            "max_clients": self.max_clients,
            "calibration": self.calibration_,
            "state_bytes_per_client": self.state_bytes() if self.fitted else None,
        }

    # -- persistence ---------------------------------------------------------------------
    def _parts(self) -> tuple[bytes, bytes]:
        """The saved form: ``monitor.json``'s bytes and ``monitor.npz``'s."""
        if self.space_ is None or self.input_shape_ is None:
            raise ConfigError("fit the monitor before saving it")
        import io

        buf = io.BytesIO()
        np.savez(buf, **self.space_.arrays())
        blob = buf.getvalue()
        manifest = {
            "format_version": FORMAT_VERSION,
            "input_shape": list(self.input_shape_),
            "n_components": self.n_components,
            "target_fpr": self.target_fpr,
            "max_clients": self.max_clients,
            "actions": self.actions,
            "tier_actions": self.tier_actions,
            "detectors": [{"name": d.name, "params": d.params()} for d in self.detectors],
            "calibration": self.calibration_,
            "arrays_sha256": hashlib.sha256(blob).hexdigest(),
        }
        return json.dumps(manifest, indent=1, allow_nan=False).encode(), blob

    def save(self, directory: str | Path) -> Path:
        """Write ``monitor.json`` and ``monitor.npz`` into ``directory`` (a model directory)."""
        manifest, blob = self._parts()
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(out / NPZ_NAME, blob)
        _atomic_write(out / JSON_NAME, manifest)
        return out

    def to_bytes(self) -> bytes:
        """The saved form in one byte string (the gateway sends it to its detectors' child
        process, gateway/monitor_process.py): no pickle, read back by :meth:`from_bytes`."""
        manifest, blob = self._parts()
        return len(manifest).to_bytes(8, "little") + manifest + blob

    @classmethod
    def from_bytes(cls, data: bytes, *, clock: Callable[[], float] = time.time) -> Monitor:
        """The monitor of :meth:`to_bytes` (the same checks as :meth:`load`)."""
        n = int.from_bytes(data[:8], "little")
        return cls._from_parts(data[8 : 8 + n], data[8 + n :], "the monitor's bytes", clock)

    @classmethod
    def load(cls, directory: str | Path, *, clock: Callable[[], float] = time.time) -> Monitor:
        """The monitor saved in ``directory`` by :meth:`save`."""
        d = Path(directory)
        jpath, npath = d / JSON_NAME, d / NPZ_NAME
        if not jpath.is_file() or not npath.is_file():
            raise ModelError(
                f"{d} has no saved monitor ({JSON_NAME} and {NPZ_NAME}); fit one and save it"
            )
        return cls._from_parts(jpath.read_bytes(), npath.read_bytes(), str(d), clock)

    @classmethod
    def _from_parts(
        cls, manifest_bytes: bytes, blob: bytes, where: str, clock: Callable[[], float]
    ) -> Monitor:
        """The monitor of a saved form (``monitor.json``'s bytes, ``monitor.npz``'s), checked:
        format version, the arrays' SHA-256, known detectors, no pickle."""
        try:
            manifest = json.loads(manifest_bytes.decode("utf-8"))
            if manifest["format_version"] != FORMAT_VERSION:
                raise ModelError(
                    f"{where}: format version {manifest['format_version']}; this privguard "
                    f"reads version {FORMAT_VERSION}: re-fit the monitor"
                )
            if hashlib.sha256(blob).hexdigest() != manifest["arrays_sha256"]:
                raise ModelError(
                    f"{where}: {NPZ_NAME} was altered after saving; re-fit the monitor"
                )
            detectors = []
            for entry in manifest["detectors"]:
                kind = DETECTORS.get(entry["name"])
                if kind is None:
                    raise ModelError(f"{where} names an unknown detector {entry['name']!r}")
                detectors.append(kind.from_params(entry["params"]))
            monitor = cls(
                detectors,
                actions=manifest["actions"],
                tier_actions=manifest["tier_actions"],
                max_clients=manifest["max_clients"],
                n_components=manifest["n_components"],
                target_fpr=manifest["target_fpr"],
                clock=clock,
            )
            import io

            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            monitor.space_ = FeatureSpace.from_arrays(arrays)
            monitor.input_shape_ = tuple(int(v) for v in manifest["input_shape"])
            monitor.calibration_ = manifest.get("calibration", {})
        except ModelError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as e:
            raise ModelError(f"{where} holds a malformed saved monitor ({e}); re-fit it") from None
        for det in monitor.detectors:
            if hasattr(det, "bind"):
                det.bind(monitor.space_)
        return monitor


def _records(x: Any, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2:
        raise DataError(f"{what} must be a batch of records, shape (n, ...); got {x.shape}")
    if shape is not None and x.shape[1:] != shape and x.shape[1:] != (int(np.prod(shape)),):
        raise DataError(
            f"{what} records have shape {x.shape[1:]}; the monitor was fitted on {shape}"
        )
    if not np.isfinite(x).all():
        raise DataError(f"{what} holds NaN or infinite values")
    return x


__all__ = ["ACTIONS", "DETECTORS", "DEFAULT_ACTIONS", "Finding", "Monitor"]
