"""A target made from the user's own fitted model and the user's own split.

:func:`user_target` turns ``(model, members, nonmembers, population)`` into a :class:`UserTarget`,
a :class:`~privguard.models.Target` the audit runner uses like any other:

- the dataset is members + non-members + population (encoded for the attacks by a
  :class:`~privguard.data.user.Codec`), the split indexes the three roles;
- the predictor (:class:`EncodedPredictor`) decodes the attacks' vectors back to what the model
  takes (a DataFrame with the model's columns and dtypes, or an array in the model's dtype)
  before asking the model, and checks every answer (width, NaN);
- the recipe (:class:`EncodedRecipe`) is the adapter's (a scikit-learn clone, a training hook,
  a recipe file or a proxy), trained on the same raw representation as the user's model.

The user's model is never refitted, mutated or re-encoded: only ``predict_proba`` /
``predict_logits`` are called on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from privguard.data.user import ArrayCodec, Codec, UserData, load_user_split
from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    adapt,
    check_proba,
    register_loader,
)
from privguard.models.target import FORMAT_VERSION, Target, manifest_hash


class EncodedPredictor:
    """A :class:`~privguard.oracle.Predictor` over the attacks' encoded vectors: decodes each
    query to the model's own representation and asks the adapter."""

    def __init__(self, adapter: ModelAdapter | Any, codec: Codec) -> None:
        self.adapter = adapter
        self.codec = codec
        self.n_classes = int(adapter.n_classes)
        self.input_shape = tuple(codec.input_shape)
        # array models are queried in their own dtype (a float64 model in float64); a model on
        # a DataFrame gets decoded columns, so the encoded vectors are passed on in float64
        if isinstance(codec, ArrayCodec):
            self.dtype = np.dtype(getattr(adapter, "dtype", None) or np.float32)
        else:
            self.dtype = np.dtype(np.float64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = self.adapter.predict_proba(self.codec.decode(x))
        return check_proba(p, len(x), self.n_classes, who=_who(self.adapter))

    def predict_logits(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(self.adapter.predict_logits(self.codec.decode(x)), dtype=np.float64)
        if z.shape != (len(x), self.n_classes) or np.isnan(z).any():
            # -inf is a scikit-learn log-probability of an impossible class; NaN is an error
            check_proba(
                np.where(np.isinf(z), 0.0, z), len(x), self.n_classes, who=_who(self.adapter)
            )
        return z


class EncodedRecipe:
    """The adapter's recipe over encoded vectors: decodes the records and labels, trains a fresh
    model on them in the target's raw representation, and wraps it like the target."""

    def __init__(self, recipe: Recipe, codec: Codec, classes: list[Any]) -> None:
        self.recipe = recipe
        self.codec = codec
        self.classes = list(classes)
        self.kind = recipe.kind
        self.description = recipe.description

    def fit(self, x: np.ndarray, y: np.ndarray, *, seed: int) -> EncodedPredictor:
        labels = np.asarray(self.classes)[np.asarray(y, dtype=np.int64)]
        model = self.recipe.fit(self.codec.decode(x), labels, seed=seed)
        if not (hasattr(model, "predict_proba") and hasattr(model, "n_classes")):
            model = adapt(model)  # e.g. a fitted estimator: wrap it like the target
        return EncodedPredictor(model, self.codec)


class UserTarget(Target):
    """A user's fitted model on the user's split (see the module docstring).

    Attributes:
        adapter: the model, as a :class:`~privguard.models.adapters.ModelAdapter`.
        user: the split: dataset, indices, codec, raw records, classes.
    """

    def __init__(self, adapter: ModelAdapter, user: UserData) -> None:
        predictor = EncodedPredictor(adapter, user.codec)
        ds = user.dataset
        dataset = {
            "name": ds.name,
            "kind": ds.kind,
            "origin": "user",
            "sha256": ds.content_hash(),
            "n": len(ds),
            "input_shape": list(ds.input_shape),
            "classes": ds.classes,
            "bounds": list(ds.bounds),
            **({"files_sha256": user.info["sha256"]} if "sha256" in user.info else {}),
        }
        architecture = {
            **adapter.describe(),
            "input_shape": list(ds.input_shape),
            "n_classes": int(adapter.n_classes),
        }
        super().__init__(
            predictor,
            kind="user",
            architecture=architecture,
            dataset=dataset,
            split=user.split,
            metrics={},
        )
        self.adapter = adapter
        self.user = user
        if isinstance(user.codec, ArrayCodec):
            # the attacks' space is the model's own: evaluators may read its parameters
            self.estimator = getattr(adapter, "estimator", None)
        members, non = user.split.members, user.split.nonmembers
        # one pass over members and non-members: checks every answer (width, NaN) up front
        train_acc = _accuracy(predictor, ds.x[members], ds.y[members])
        test_acc = _accuracy(predictor, ds.x[non], ds.y[non])
        self.metrics = {
            "train_accuracy": round(train_acc, 6),
            "test_accuracy": round(test_acc, 6),
            "generalization_gap": round(train_acc - test_acc, 6),
        }

    @property
    def recipe(self) -> EncodedRecipe | None:  # type: ignore[override]
        """The adapter's recipe over the attacks' encoded vectors (``None`` if it has none)."""
        r = self.adapter.recipe()
        return None if r is None else EncodedRecipe(r, self.user.codec, self.user.classes)

    def load_data(self, data: Any = None, *, label: str | None = None):  # type: ignore[override]
        if data is not None:
            raise ConfigError(
                "a model audited on your own split takes its data from members= / nonmembers= "
                "/ population=; leave data= (CLI --data) out"
            )
        return self.user.dataset

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        r = self.adapter.recipe()
        d["reference_recipe"] = (
            {"kind": r.kind, "description": r.description}
            if r is not None
            else {"kind": None, "description": "none: reference-model attacks cannot run"}
        )
        if r is not None and r.kind == "proxy":
            d["reference_recipe"]["note"] = (
                "LiRA, RMIA and shadow models used a proxy model privguard chose, not the "
                "target's own training recipe; a matching recipe (train_fn / --recipe) would make "
                "them stronger, so their numbers are a lower bound on the leak"
            )
        return d

    def files(self) -> dict[str, bytes]:
        """A model directory for this model (``save`` writes it): ``model.skops`` and a
        ``model.json`` that records the split as content hashes of the parts, not copies, so a
        later audit can check it is given the same data."""
        from privguard.models.adapters.sklearn import SklearnAdapter

        if not isinstance(self.adapter, SklearnAdapter):
            raise ConfigError(
                f"saving a {self.adapter.framework} model as a privguard directory is not "
                "supported yet; keep your model file and pass it to --model"
            )
        import skops.io as sio

        blob = sio.dumps(self.adapter.estimator)
        info = self.user.info
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": "user",
            "architecture": self.architecture,
            "dataset": self.dataset,
            "user_split": {
                "label": info.get("label"),
                "seed": info.get("seed"),
                "records": {k: info[k] for k in ("members", "nonmembers")},
                "population": info.get("population"),
                "sources": info.get("sources"),
                "content_sha256": info.get("content_sha256"),
                "files_sha256": info.get("sha256"),
            },
            "metrics": self.metrics,
            "weights": "model.skops",
        }
        manifest["integrity"] = {
            "model.skops": hashlib.sha256(blob).hexdigest(),
            "manifest": manifest_hash(manifest),
        }
        return {"model.skops": blob, "model.json": json.dumps(manifest, indent=1).encode()}


def user_target(
    model: Any,
    *,
    members: Any,
    nonmembers: Any,
    population: Any = None,
    label: str | None = None,
    trusted: Iterable[str] = (),
    seed: int = 0,
    **options: Any,
) -> UserTarget:
    """A :class:`UserTarget` from a fitted model (object or model file) and the user's split.

    Example:
        >>> target = user_target(pipeline, members=train_df, nonmembers=holdout_df,
        ...                      label="income")
        >>> privguard.audit(target, attacks=["membership"])
    """
    if isinstance(model, Target):
        raise ConfigError(
            "members= / nonmembers= are for a model you trained yourself; a privguard target "
            "already records its split"
        )
    if isinstance(model, str | Path):
        if (Path(model) / "model.json").is_file() and not is_user_dir(Path(model)):
            raise ConfigError(
                f"{model} is a privguard model directory: it records its own split, so leave "
                "out --members / --nonmembers / --population"
            )
        adapter = adapt(model, trusted=list(trusted), **options)
    else:
        adapter = adapt(model, **options)
    data = load_user_split(
        members,
        nonmembers,
        population,
        label=label,
        classes=list(adapter.classes) if getattr(adapter, "classes", None) is not None else None,
        columns=adapter.columns if adapter.takes_frame else None,
        dtype=adapter.dtype,
        frame_model=bool(adapter.takes_frame),
        seed=seed,
    )
    _check_recorded(getattr(adapter, "recorded_split", None), data)
    return UserTarget(adapter, data)


def as_user_target(
    target: Any,
    *,
    members: Any = None,
    nonmembers: Any = None,
    population: Any = None,
    label: str | None = None,
    trusted: Iterable[str] = (),
    seed: int = 0,
) -> Any:
    """What ``privguard.audit`` audits: a :class:`UserTarget` when a split is given, the
    ``target`` unchanged when it is a privguard target, a model directory or a text model; a
    fitted model object without a split is a :class:`ConfigError` that says to pass one."""
    if members is not None or nonmembers is not None or population is not None:
        return user_target(
            target,
            members=members,
            nonmembers=nonmembers,
            population=population,
            label=label,
            trusted=trusted,
            seed=seed,
        )
    if isinstance(target, str | Path) and is_user_dir(Path(target)):
        raise ConfigError(
            f"{target} records your split as content hashes, not the records: pass --members "
            "FILE --nonmembers FILE (and --population if you gave one) again"
        )
    if isinstance(target, str | Path) and Path(target).is_file():
        raise ConfigError(
            f"to audit your own model {target}, pass the records it was trained on and records "
            "it never saw: --members FILE --nonmembers FILE --label COLUMN (Python: members=, "
            "nonmembers=, label=)"
        )
    if isinstance(target, Target | str | Path):
        return target
    from privguard.models.text import TextTarget

    if isinstance(target, TextTarget):
        return target
    raise ConfigError(
        f"to audit your own {type(target).__name__}, pass the records it was trained on and "
        "records it never saw: privguard.audit(model, members=..., nonmembers=..., "
        "label=...) (see docs/byom.md)"
    )


def is_user_dir(path: Path) -> bool:
    """Whether ``path`` is a model directory written for a user's own model (kind ``user``)."""
    mpath = path / "model.json"
    if not mpath.is_file():
        return False
    try:
        return json.loads(mpath.read_text()).get("kind") == "user"
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, OSError):
        return False


def load_user_dir(path: Path, *, trusted: Iterable[str] = (), **_: Any) -> ModelAdapter:
    """The model of a directory written by :meth:`UserTarget.save` (``privguard import``),
    with the split it recorded (``recorded_split``) for :func:`user_target` to check."""
    from privguard.models.adapters.sklearn import SklearnAdapter
    from privguard.models.safe_load import sklearn_estimator, weights_path

    mpath = path / "model.json"
    try:
        manifest = json.loads(mpath.read_text())
        integrity = manifest.pop("integrity")
        name = manifest["weights"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ModelError(f"{mpath} is not a valid privguard model.json") from None
    if not isinstance(integrity, dict) or manifest_hash(manifest) != integrity.get("manifest"):
        raise ModelError(f"{mpath} was altered after it was written (checksum mismatch)")
    wpath = weights_path(path, name)
    if not wpath.is_file():
        raise ModelError(f"{path} is missing {name}; restore it or import the model again")
    blob = wpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != integrity.get(name):
        raise ModelError(f"{wpath} was altered after it was written (checksum mismatch)")
    adapter = SklearnAdapter(sklearn_estimator(blob, wpath, trusted))
    adapter.recorded_split = manifest.get("user_split") or {}  # type: ignore[attr-defined]
    return adapter


def _check_recorded(recorded: dict[str, Any] | None, data: UserData) -> None:
    """The split given now must be the one recorded when the model directory was written."""
    if not recorded:
        return
    want = recorded.get("content_sha256") or {}
    have = data.info.get("content_sha256", {})
    for part in ("members", "nonmembers", "population"):
        if part in want and part not in have:
            raise DataError(f"the model directory recorded a {part} file: give it again")
        if part in want and want[part] != have[part]:
            raise DataError(
                f"the {part} differ from those recorded with the model (sha256 "
                f"{want[part][:12]}..., given {have[part][:12]}...); give the same records"
            )


def _accuracy(predictor: EncodedPredictor, x: np.ndarray, y: np.ndarray) -> float:
    p = predictor.predict_proba(x.astype(predictor.dtype))
    return float(np.mean(np.argmax(p, axis=1) == y))


def _who(adapter: ModelAdapter) -> str:
    d = getattr(adapter, "framework", "model")
    return f"the {d} model"


register_loader(is_user_dir, load_user_dir, name="privguard user-model directory", priority=40)
