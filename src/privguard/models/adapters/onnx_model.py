"""ONNX models: an ``onnxruntime.InferenceSession`` or a ``.onnx`` file.

An ONNX graph is data, not code: onnxruntime runs its operators (custom-operator libraries are
never registered here). :class:`OnnxAdapter` feeds the model's single input in the dtype the
graph declares (``tensor(double)`` is queried in float64) and reads one output:

- ``output_name=``, else the output whose name contains ``prob`` (scikit-learn models converted
  by skl2onnx: ``output_probability``, a tensor with ``zipmap=False`` or a list of
  ``{class: probability}`` maps with ZipMap), else the last float output;
- ``output="probs"`` or ``"logits"`` says what it holds; by default (``"auto"``) a
  ``prob``-named output is probabilities and anything else is decided once, on the first
  answer: rows of non-negative values summing to 1 are probabilities, others logits.

The class list comes from ``classes=``, the ZipMap keys, or the output's declared width
(``0..K-1``); an ONNX model has no training recipe, so reference-model attacks use the
attacker's proxy (:mod:`privguard.models.adapters.proxy`) and the report says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    check_proba,
    class_labels,
    register_adapter,
    register_loader,
)
from privguard.models.adapters.generic import (
    SUM_TOLERANCE,
    check_probabilities,
    resolve_classes,
    softmax,
)

DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def is_onnx_session(model: Any) -> bool:
    import sys

    ort = sys.modules.get("onnxruntime")
    return ort is not None and isinstance(model, ort.InferenceSession)


class OnnxAdapter(ModelAdapter):
    """An onnxruntime session answering class probabilities or logits (see the module
    docstring).

    Args:
        session: the ``InferenceSession`` (or use :func:`load_onnx` for a path).
        classes / n_classes: labels of the output columns.
        output: ``auto``, ``probs`` or ``logits``.
        output_name: which graph output to read.
    """

    framework = "onnx"

    def __init__(
        self,
        session: Any,
        *,
        classes: Sequence[Any] | None = None,
        n_classes: int | None = None,
        output: str = "auto",
        output_name: str | None = None,
        source: str | None = None,
        **_: Any,
    ) -> None:
        if output not in ("auto", "probs", "logits"):
            raise ConfigError(f"output={output!r}: use auto, probs or logits")
        self.session = session
        self.source = source
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelError(
                f"the ONNX model takes {len(inputs)} inputs ({names}); privguard queries models "
                "with one input tensor (convert the model with a single feature input)"
            )
        self.input = inputs[0]
        if self.input.type not in DTYPES:
            raise ModelError(
                f"the ONNX model's input is {self.input.type}; privguard feeds it numbers"
            )
        self.dtype = np.dtype(DTYPES[self.input.type])
        self.input_shape = tuple(
            int(d) if isinstance(d, int) else 0 for d in list(self.input.shape)[1:]
        )
        self.out = self._pick_output(session.get_outputs(), output_name)
        self.zipmap = self.out.type.startswith("seq(map")
        self.output = output
        if output == "auto" and "prob" in self.out.name.lower():
            self.output = "probs"
        width = None
        shape = list(getattr(self.out, "shape", []) or [])
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
            width = shape[1]
        if classes is None and n_classes is None and width is not None:
            n_classes = width
        if classes is None and n_classes is None and self.zipmap:
            classes = self._zipmap_keys()
        self.classes = resolve_classes(session, classes, n_classes, what="the ONNX model")
        self.n_classes = len(self.classes)

    @staticmethod
    def _pick_output(outputs: list[Any], name: str | None) -> Any:
        if name is not None:
            for o in outputs:
                if o.name == name:
                    return o
            raise ConfigError(
                f"the ONNX model has no output {name!r}; its outputs are "
                f"{', '.join(o.name for o in outputs)}"
            )
        for o in outputs:
            if "prob" in o.name.lower():
                return o
        floats = [o for o in outputs if o.type in ("tensor(float)", "tensor(double)")]
        if not floats:
            raise ModelError("the ONNX model has no float output to read probabilities from")
        return floats[-1]

    def _zipmap_keys(self) -> list[Any]:
        x = np.zeros((1, *[s or 1 for s in self.input_shape]), dtype=self.dtype)
        rows = self.session.run([self.out.name], {self.input.name: x})[0]
        return class_labels(sorted(rows[0]))

    def _run(self, x: Any) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x), dtype=self.dtype)
        try:
            res = self.session.run([self.out.name], {self.input.name: x})[0]
        except Exception as e:  # onnxruntime raises its own exception types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise DataError(f"the ONNX model refused the records: {first[:300]}") from None
        if self.zipmap:
            res = np.array([[row[c] for c in self.classes] for row in res], dtype=np.float64)
        res = check_proba(res, len(x), self.n_classes, who="the ONNX model")
        if self.output == "auto":
            sums = res.sum(axis=1)
            probs = res.min() >= -SUM_TOLERANCE and np.abs(sums - 1).max() <= SUM_TOLERANCE
            self.output = "probs" if probs else "logits"
        return res

    def predict_proba(self, x: Any) -> np.ndarray:
        res = self._run(x)
        if self.output == "logits":
            return softmax(res)
        return check_probabilities(res, who="the ONNX model")

    def predict_logits(self, x: Any) -> np.ndarray:
        res = self._run(x)
        if self.output == "logits":
            return res
        return np.log(np.clip(check_probabilities(res, who="the ONNX model"), 1e-300, None))

    def recipe(self) -> Recipe:
        from privguard.models.adapters.proxy import ProxyRecipe

        return ProxyRecipe(self.classes, data="image" if len(self.input_shape) == 3 else "array")

    def describe(self) -> dict[str, Any]:
        meta = self.session.get_modelmeta()
        d: dict[str, Any] = {
            "framework": "onnx",
            "type": f"onnx ({meta.producer_name or 'unknown producer'})",
            "input": f"{self.input.name}: {self.input.type} {list(self.input.shape)}",
            "output": f"{self.out.name} ({self.output})",
            "classes": [str(c) for c in self.classes],
        }
        if self.source:
            d["file"] = self.source
        return d

    def fingerprint(self) -> bytes:
        h = hashlib.sha256()
        blob = getattr(self.session, "_model_bytes", None)
        path = getattr(self.session, "_model_path", None)
        if blob:
            h.update(bytes(blob))
        elif path:
            h.update(Path(path).read_bytes())
        h.update(repr(sorted(self.session.get_modelmeta().custom_metadata_map.items())).encode())
        return h.digest()


def load_onnx(path: str | Path, **options: Any) -> OnnxAdapter:
    """A ``.onnx`` file in an onnxruntime CPU session (no custom-operator libraries)."""
    import onnxruntime as ort

    p = Path(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{p} is not a valid ONNX model: {first[:300]}") from None
    return OnnxAdapter(session, source=str(p), **options)


register_adapter(is_onnx_session, OnnxAdapter, name="onnx", priority=40)
register_loader(
    lambda p: p.is_file() and p.suffix.lower() == ".onnx", load_onnx, name=".onnx", priority=50
)
