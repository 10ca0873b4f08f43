"""The audited model: a predictor plus everything recorded about how it was made.

A target directory holds ``model.json`` (architecture, preprocessing, dataset and content hash,
split indices, training recipe, accuracies, checksums) and the weights: ``model.safetensors``
for PyTorch models, ``model.skops`` for scikit-learn estimators. Nothing is ever unpickled:
safetensors holds only tensors, and skops loads only an explicit list of exact type names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from privguard._io import atomic_write_bytes, out_directory
from privguard.data import Dataset, Split, load_dataset, make_split
from privguard.errors import DataError, ModelError
from privguard.models.nets import count_parameters
from privguard.models.safe_load import sklearn_estimator, torch_module, weights_path
from privguard.models.torch_predictor import TorchPredictor
from privguard.models.train import TrainConfig, TrainingRecipe, accuracy, train_module
from privguard.oracle import Access, Oracle, Predictor, SklearnPredictor

FORMAT_VERSION = 1
Progress = Callable[[str, int, int], None]


class Target:
    """A trained model under audit.

    Example:
        >>> target = privguard.load_target("model-dir")
        >>> target.predict_proba(x)            # (n, classes)
        >>> oracle = target.oracle("label")    # what an attacker with label access gets
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        kind: str,
        architecture: dict[str, Any],
        dataset: dict[str, Any],
        split: Split,
        config: TrainConfig | None = None,
        metrics: dict[str, Any] | None = None,
        estimator: Any = None,
        path: Path | None = None,
    ) -> None:
        self.predictor = predictor
        self.kind = kind
        self.architecture = architecture
        self.dataset = dataset
        self.split = split
        self.config = config
        self.metrics = metrics or {}
        self.estimator = estimator
        self.path = path

    # -- model behaviour -----------------------------------------------------------------
    @property
    def n_classes(self) -> int:
        return self.predictor.n_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.predictor.input_shape)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, classes)`` for preprocessed inputs ``(n, *input_shape)``."""
        dtype = getattr(self.predictor, "dtype", None) or np.float32
        return self.predictor.predict_proba(np.asarray(x, dtype=dtype))

    def oracle(self, access: Access | str = Access.PROBS, *, budget: int | None = None) -> Oracle:
        """An attacker's view of this model at ``access`` level."""
        return Oracle(self.predictor, access, budget=budget)

    @property
    def recipe(self) -> TrainingRecipe | _SklearnRecipe | None:
        """How to train another model like this one (known to shadow-model attackers)."""
        if self.config is not None:
            return TrainingRecipe(self.config, self.n_classes)
        if self.estimator is not None:
            return _SklearnRecipe(self.estimator, self.input_shape)
        return None

    # -- data ----------------------------------------------------------------------------
    def load_data(self, data: str | Dataset | None = None, *, label: str | None = None) -> Dataset:
        """The data this model was trained on (recorded in model.json), or ``data`` checked
        against the recorded content hash."""
        rec = self.dataset
        if isinstance(data, Dataset):
            ds = data
        else:
            source = data if data is not None else rec.get("path") or rec["name"]
            ds = load_dataset(
                str(source),
                label=label or rec.get("label"),
                preprocessing=rec.get("preprocessing"),
            )
        expected = rec.get("sha256")
        if expected and ds.content_hash() != expected:
            raise DataError(
                f"the data ({ds.name}) differs from what this model was trained on "
                f"({rec['name']}, sha256 {expected[:12]}...); audit with the training data, or "
                "retrain the model on this data"
            )
        self.split.check(len(ds))
        return ds

    # -- description ---------------------------------------------------------------------
    @property
    def privacy(self) -> dict[str, Any] | None:
        """The DP guarantee training achieved (``epsilon``, ``delta``, ``noise_multiplier``,
        ``sample_rate``, ``steps``, ``accountant``, ...), or ``None`` for non-private training."""
        return self.metrics.get("privacy")

    def describe(self) -> dict[str, Any]:
        """What the report shows about the model; a DP-trained model's achieved guarantee is
        its ``privacy`` entry."""
        d: dict[str, Any] = {
            "path": str(self.path) if self.path else None,
            "kind": self.kind,
            "architecture": self.architecture,
            "training": self.config.to_dict() if self.config else None,
        }
        d.update(self.metrics)
        return d

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` and the weights into ``directory`` (created if needed)."""
        out = out_directory(directory)
        files = self.files()
        for name in sorted(files, key=lambda n: n == "model.json"):  # the manifest last
            atomic_write_bytes(out / name, files[name])
        self.path = out
        return out

    def files(self) -> dict[str, bytes]:
        """The model directory's files in memory: ``model.json`` and the weights file (for
        writers that place them elsewhere, e.g. a stolen model among a report's artifacts)."""
        if self.kind == "torch":
            from safetensors.torch import save as save_tensors

            state = {k: v.contiguous() for k, v in self.predictor.module.state_dict().items()}
            weights_name, blob = "model.safetensors", save_tensors(state)
        else:
            import skops.io as sio

            weights_name, blob = "model.skops", sio.dumps(self.estimator)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "architecture": self.architecture,
            "dataset": self.dataset,
            "split": self.split.to_dict(),
            "training": self.config.to_dict() if self.config else None,
            "metrics": self.metrics,
            "weights": weights_name,
        }
        manifest["integrity"] = {
            weights_name: hashlib.sha256(blob).hexdigest(),
            "manifest": manifest_hash(manifest),
        }
        return {weights_name: blob, "model.json": json.dumps(manifest, indent=1).encode()}

    @classmethod
    def load(cls, directory: str | Path, *, trusted: Iterable[str] = ()) -> Target:
        """Load a model directory; ``trusted``: exact type names a ``.skops`` file may use
        beyond the built-in allowlist (CLI ``--trust``)."""
        d = Path(directory)
        mpath = d / "model.json"
        if not d.is_dir():
            raise ModelError(f"no model directory at {d}; train one with `privguard train`")
        if not mpath.is_file():
            raise ModelError(f"{d} has no model.json; it is not a privguard model directory")
        try:
            manifest = json.loads(mpath.read_text())
            integrity = manifest.pop("integrity")
            weights_name = manifest["weights"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
            raise ModelError(f"{mpath} is not a valid privguard model.json") from None
        if not isinstance(integrity, dict) or manifest_hash(manifest) != integrity.get("manifest"):
            raise ModelError(
                f"{mpath} was altered after training (checksum mismatch); restore the original "
                "or retrain the model"
            )
        wpath = weights_path(d, weights_name)
        if not wpath.is_file():
            raise ModelError(f"{d} is missing {weights_name}; restore it or retrain the model")
        blob = wpath.read_bytes()
        if hashlib.sha256(blob).hexdigest() != integrity.get(weights_name):
            raise ModelError(
                f"{wpath} was altered after training (checksum mismatch); restore the original "
                "or retrain the model"
            )
        if manifest["kind"] == "user":  # privguard import: the split is recorded as hashes
            raise ModelError(
                f"{d} holds your own model and records its split as hashes: audit it with "
                "privguard.audit(DIR, members=..., nonmembers=...) (CLI --members/--nonmembers)"
            )
        split = Split.from_dict(manifest["split"])
        arch = manifest["architecture"]
        common = dict(
            architecture=arch,
            dataset=manifest["dataset"],
            split=split,
            metrics=manifest.get("metrics", {}),
            path=d,
        )
        if manifest["kind"] == "torch":
            module = torch_module(arch, blob, wpath)
            predictor = TorchPredictor(module, arch["input_shape"], arch["n_classes"])
            # a model with no recipe (e.g. one stolen by an extraction attack) has none
            training = manifest.get("training")
            config = TrainConfig.from_dict(training) if training else None
            return cls(predictor, kind="torch", config=config, **common)
        if manifest["kind"] == "sklearn":
            # exact type names only, never whole packages (see models/adapters/sklearn.py)
            estimator = sklearn_estimator(blob, wpath, trusted)
            predictor = SklearnPredictor(estimator, arch["input_shape"])
            return cls(predictor, kind="sklearn", estimator=estimator, **common)
        raise ModelError(f"{mpath}: unknown model kind {manifest['kind']!r}")


class _SklearnRecipe:
    """Refit a clone of the target's estimator (same hyper-parameters) on new data."""

    def __init__(self, estimator: Any, input_shape) -> None:
        self.estimator = estimator
        self.input_shape = tuple(input_shape)

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> SklearnPredictor:
        from sklearn.base import clone

        est = clone(self.estimator)
        if "random_state" in est.get_params():
            est.set_params(random_state=seed)
        est.fit(x.reshape(len(x), -1), y)
        return SklearnPredictor(est, self.input_shape)


def _dataset_record(ds: Dataset, label: str | None) -> dict[str, Any]:
    from privguard.data import BUILTIN

    rec: dict[str, Any] = {"name": ds.name, "kind": ds.kind, "sha256": ds.content_hash()}
    if ds.name not in BUILTIN:
        rec["path"] = str(Path(ds.name).resolve())
        if label:
            rec["label"] = label
        if ds.preprocessing is not None:
            rec["preprocessing"] = ds.preprocessing
    rec.update(
        {
            "n": len(ds),
            "input_shape": list(ds.input_shape),
            "classes": ds.classes,
            "bounds": list(ds.bounds),
        }
    )
    return rec


def train_target(
    data: str | Dataset,
    config: TrainConfig | None = None,
    *,
    label: str | None = None,
    progress: Progress | None = None,
    device: str = "cpu",
) -> Target:
    """Split ``data`` (seeded), train a PyTorch target on the members, measure its accuracy.
    ``device`` (``cpu``, ``cuda``, ``auto``) is where the training runs.

    Example:
        >>> target = privguard.train("digits", TrainConfig(model="mlp", epochs=50))
        >>> target.save("model-dir")
    """
    config = config or TrainConfig()
    ds = data if isinstance(data, Dataset) else load_dataset(data, label=label)
    split = make_split(
        ds.y,
        seed=config.seed,
        member_fraction=config.train_fraction,
        nonmember_fraction=config.nonmember_fraction,
        validation_fraction=config.validation_fraction,
    )
    v = split.validation
    module, log = train_module(
        config,
        ds.x[split.members],
        ds.y[split.members],
        ds.n_classes,
        x_val=ds.x[v] if len(v) else None,
        y_val=ds.y[v] if len(v) else None,
        progress=progress,
        device=device,
    )
    predictor = TorchPredictor(module, ds.input_shape, ds.n_classes)
    return Target(
        predictor,
        kind="torch",
        architecture=config.architecture(ds.input_shape, ds.n_classes),
        dataset=_dataset_record(ds, label),
        split=split,
        config=config,
        metrics=_fit_metrics(predictor, ds, split, count_parameters(module), log),
    )


def from_sklearn(
    estimator: Any,
    data: str | Dataset,
    *,
    seed: int = 0,
    train_fraction: float = 0.4,
    nonmember_fraction: float = 0.3,
    label: str | None = None,
) -> Target:
    """Fit a clone of a scikit-learn classifier on a seeded member split of ``data`` and wrap
    it as a target (persisted with skops). ``estimator`` itself is left untouched: to audit a
    model you already trained, use ``privguard.audit(model, members=..., nonmembers=...)``."""
    from sklearn.base import clone

    ds = data if isinstance(data, Dataset) else load_dataset(data, label=label)
    split = make_split(
        ds.y, seed=seed, member_fraction=train_fraction, nonmember_fraction=nonmember_fraction
    )
    estimator = clone(estimator)  # never refit the caller's object (it may be their model)
    estimator.fit(ds.x[split.members].reshape(len(split.members), -1), ds.y[split.members])
    predictor = SklearnPredictor(estimator, ds.input_shape)
    arch = {
        "type": type(estimator).__name__,
        "input_shape": list(ds.input_shape),
        "n_classes": ds.n_classes,
        "params": {k: repr(v) for k, v in sorted(estimator.get_params().items())},
    }
    return Target(
        predictor,
        kind="sklearn",
        architecture=arch,
        dataset=_dataset_record(ds, label),
        split=split,
        estimator=estimator,
        metrics=_fit_metrics(predictor, ds, split, None, {}),
    )


def _fit_metrics(predictor, ds: Dataset, split: Split, n_params, log) -> dict[str, Any]:
    train_acc = accuracy(predictor, ds.x[split.members], ds.y[split.members])
    test_acc = accuracy(predictor, ds.x[split.nonmembers], ds.y[split.nonmembers])
    m = {
        "train_accuracy": round(train_acc, 6),
        "test_accuracy": round(test_acc, 6),
        "generalization_gap": round(train_acc - test_acc, 6),
        **log,
    }
    from privguard.audit.advice import predictor_utility

    m["utility"] = predictor_utility(
        predictor,
        ds.x[split.nonmembers],
        ds.y[split.nonmembers],
        ds.y[split.members],
        ds.n_classes,
    )
    if n_params is not None:
        m["n_parameters"] = n_params
    return m


def manifest_hash(manifest: dict[str, Any]) -> str:
    """The integrity hash of a model.json (without its ``integrity`` entry)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def load_target(directory: str | Path, *, trusted: Iterable[str] = ()) -> Target:
    """Load a target directory written by ``privguard train`` or :meth:`Target.save`."""
    return Target.load(directory, trusted=trusted)
