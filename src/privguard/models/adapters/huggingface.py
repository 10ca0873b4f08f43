"""Hugging Face sequence classifiers: a model and its tokenizer, or a local model directory.

:class:`HFClassifierAdapter` takes records as a DataFrame with one text column
(``text_column``, default ``text``): the user's members and non-members are tables of text and
label. Each query is tokenized (padding, truncation at ``max_length``) and answered by the model
under ``torch.no_grad()`` in eval mode, every submodule's train/eval flag restored after, so the
model is never changed (``fingerprint`` as for PyTorch modules).

The class list is the model's ``id2label`` when it names the labels, else ``0..K-1``
(``classes=`` overrides it). A fine-tuned transformer brings no training recipe privguard can
rerun cheaply, so reference-model attacks (LiRA, RMIA, shadow models) use the attacker's text
proxy (character n-gram TF-IDF + logistic regression, :mod:`privguard.models.adapters.proxy`)
and the report says so. Membership attacks query the audited records themselves; attacks that need
numeric inputs they can make up or alter (extraction, attribute inference, inversion, the
label-only boundary and augmentation attacks) are skipped with that reason
(:meth:`HFClassifierAdapter.unsuitable`, which the audit engine asks).

A local directory (``privguard audit --model DIR``) loads only with safetensors weights, its
own tokenizer files and no custom code: ``local_files_only=True``, ``use_safetensors=True``,
``trust_remote_code=False``; a config that maps to custom code (``auto_map``) or a directory
with only ``pytorch_model.bin`` (a pickle) is refused.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privguard.errors import ConfigError, DataError, ModelError
from privguard.models.adapters.base import (
    ModelAdapter,
    Recipe,
    check_proba,
    register_adapter,
    register_loader,
)
from privguard.models.adapters.generic import resolve_classes, softmax
from privguard.models.adapters.pytorch import _frozen, module_fingerprint

# attacks that need numeric inputs they can vary: skipped with the reason for a text model
INPUT_FAMILIES = ("extraction", "attribute", "inversion")
INPUT_ATTACKS = ("label-only-boundary", "label-only-augmentation")


def is_hf_classifier(model: Any) -> bool:
    tf = sys.modules.get("transformers")
    if tf is None or not isinstance(model, tf.PreTrainedModel):
        return False
    return type(model).__name__.endswith("ForSequenceClassification")


class HFClassifierAdapter(ModelAdapter):
    """A Hugging Face ``...ForSequenceClassification`` model with its tokenizer.

    Args:
        model: the model (never changed).
        tokenizer: its tokenizer (required).
        text_column: the records' text column.
        classes: labels of the output columns (default: ``id2label`` or ``0..K-1``).
        max_length: tokens per text (longer texts are truncated).
        batch_size: texts per forward pass.
    """

    framework = "huggingface"
    takes_frame = True
    dtype = np.float32

    def __init__(
        self,
        model: Any,
        *,
        tokenizer: Any = None,
        text_column: str = "text",
        classes: Sequence[Any] | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        source: str | None = None,
        **_: Any,
    ) -> None:
        if tokenizer is None:
            raise ConfigError(
                "a Hugging Face model needs its tokenizer: adapt(model, tokenizer=tokenizer)"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.text_column = str(text_column)
        self.columns = [self.text_column]
        self.input_shape = (1,)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.source = source
        k = int(model.config.num_labels)
        id2label = getattr(model.config, "id2label", None) or {}
        names = [id2label.get(i, id2label.get(str(i))) for i in range(k)]
        named = names and all(n is not None for n in names)
        default = named and all(re.fullmatch(r"LABEL_\d+", str(n)) for n in names)
        if classes is None and named and not default:
            classes = names
        self.classes = resolve_classes(model, classes, k, what=type(model).__name__)
        self.n_classes = len(self.classes)

    def _texts(self, x: Any) -> list[str]:
        import pandas as pd

        if not isinstance(x, pd.DataFrame) or self.text_column not in x.columns:
            raise DataError(
                f"the Hugging Face model reads a DataFrame with a {self.text_column!r} text "
                "column (text_column= names another)"
            )
        return x[self.text_column].fillna("").astype(str).tolist()

    def predict_logits(self, x: Any) -> np.ndarray:
        import torch

        texts = self._texts(x)
        out = []
        with _frozen(self.model), torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                out.append(self.model(**enc).logits.double().cpu().numpy())
        z = np.concatenate(out) if out else np.zeros((0, self.n_classes))
        return check_proba(z, len(texts), self.n_classes, who="the Hugging Face model")

    def predict_proba(self, x: Any) -> np.ndarray:
        return softmax(self.predict_logits(x))

    def recipe(self) -> Recipe:
        from privguard.models.adapters.proxy import ProxyRecipe

        return ProxyRecipe(self.classes, data="text")

    def unsuitable(self, attack: Any) -> str | None:
        """Why an attack does not apply to a text classifier (the engine skips it with this
        reason): attacks that make up or alter inputs, or infer a hidden feature, need numeric
        inputs; the membership attacks that query the records themselves apply."""
        name, fam = getattr(attack, "name", ""), getattr(attack, "family", "")
        if fam in INPUT_FAMILIES or name in INPUT_ATTACKS:
            return (
                f"the {name} attack makes up or alters inputs (or infers a hidden feature) and "
                "needs numeric inputs; this model reads text"
            )
        return None

    def describe(self) -> dict[str, Any]:
        d = {
            "framework": "huggingface",
            "type": type(self.model).__name__,
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "classes": [str(c) for c in self.classes],
            "input": f"DataFrame text column {self.text_column!r}",
            "notes": "membership attacks query the records themselves; attacks that change "
            "inputs (inversion, extraction) are not meaningful for text",
        }
        if self.source:
            d["directory"] = self.source
        return d

    def fingerprint(self) -> bytes:
        return module_fingerprint(self.model)


def _is_hf_dir(p: Path) -> bool:
    return p.is_dir() and (p / "config.json").is_file() and not (p / "model.json").exists()


def load_hf_directory(path: str | Path, **options: Any) -> HFClassifierAdapter:
    """A local sequence-classifier directory: safetensors weights, no custom code, no network."""
    p = Path(path)
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{p}/config.json is not valid JSON ({type(e).__name__})") from None
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in archs):
        raise ModelError(
            f"{p} is not a sequence classifier (architectures: {archs or 'none'}); privguard "
            "audits ...ForSequenceClassification models here (text generators: privguard audit "
            "--model DIR without --members)"
        )
    if "auto_map" in config:
        raise ModelError(
            f"{p}/config.json maps to custom model code (auto_map); privguard never runs code "
            "from a model directory"
        )
    if not list(p.glob("*.safetensors")):
        raise ModelError(
            f"{p} has no .safetensors weights; privguard does not load pytorch_model.bin "
            "(a pickle): save the model with save_pretrained(safe_serialization=True)"
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            p, local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{p} could not be loaded: {first[:300]}") from None
    model.eval()
    return HFClassifierAdapter(model, tokenizer=tokenizer, source=str(p), **options)


register_adapter(is_hf_classifier, HFClassifierAdapter, name="huggingface", priority=30)
register_loader(_is_hf_dir, load_hf_directory, name="Hugging Face directory", priority=70)
