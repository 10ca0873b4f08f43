"""The text target: a text model with its training corpus and canaries, and its persistence.

A text model directory holds ``model.json`` (kind ``char-lm`` or ``hf-lm``, architecture,
corpus record, training settings, the inserted canaries, metrics, checksums), the weights as
safetensors and the training corpus as ``corpus.txt`` (the auditor's copy, checked against its
hash). The integrity scheme is that of :mod:`privguard.models.target`. A DP-trained model's
guarantee is ``metrics.privacy``, the record classifiers have; directories written before it
existed (``metrics.dp`` with ``epsilon_spent``) load with it filled in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privguard._io import atomic_write_bytes as atomic_write
from privguard._io import out_directory
from privguard.data.corpus import Canary, CanaryFormat, Corpus
from privguard.errors import ConfigError, ModelError
from privguard.models.target import FORMAT_VERSION, manifest_hash
from privguard.models.text.base import TEXT_KINDS, TextModel
from privguard.models.text.char import CharLMPredictor, CharMLP, Vocab
from privguard.models.text.hf import HFPredictor, is_hf_source, load_hf
from privguard.training.dp import privacy_from_legacy


@dataclass
class TextTarget:
    """A text model under audit, with its training corpus and inserted canaries (the auditor's
    truth; attacks see only :attr:`formats`).

    Example:
        >>> target = load_text_target("lm-dir")
        >>> oracle = target.text_oracle(budget=None)
    """

    predictor: TextModel
    kind: str
    architecture: dict[str, Any]
    corpus: Corpus | None
    canaries: list[Canary] = field(default_factory=list)
    training: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    extrapolate: bool = False
    path: Path | None = None
    documents: dict[str, list[str]] | None = None  # fine-tuning split: members, nonmembers

    @property
    def formats(self) -> list[CanaryFormat]:
        return [CanaryFormat(t) for t in dict.fromkeys(c.format for c in self.canaries)]

    def text_oracle(self, budget: int | None = None):
        from privguard.attacks.memorization.oracle import TextOracle

        return TextOracle(self.predictor, budget=budget)

    def describe(self) -> dict[str, Any]:
        arch = {k: v for k, v in self.architecture.items() if k not in ("vocab",)}
        if "trained_parameters" in arch:
            arch["trained_parameters"] = len(arch["trained_parameters"])
        d: dict[str, Any] = {
            "path": str(self.path) if self.path else None,
            "kind": self.kind,
            "architecture": arch,
            "training": self.training,
        }
        d.update({k: v for k, v in self.metrics.items()})
        return d

    # -- persistence -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.json``, ``model.safetensors`` and ``corpus.txt`` into ``directory``."""
        from safetensors.torch import save as save_tensors

        out = out_directory(directory)
        if self.kind == "char-lm":
            module = self.predictor.module  # type: ignore[attr-defined]
            state = module.state_dict()
        else:
            names = set(self.architecture.get("trained_parameters", []))
            model = self.predictor.model  # type: ignore[attr-defined]
            state = {k: v for k, v in model.named_parameters() if k in names}
        blob = save_tensors({k: v.detach().contiguous() for k, v in state.items()})
        if self.corpus is None:
            raise ConfigError("a text target needs its training corpus to be saved")
        text = self.corpus.text.encode("utf-8")
        docs = json.dumps(self.documents).encode() if self.documents is not None else None
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "architecture": self.architecture,
            "dataset": {
                "name": self.corpus.name,
                "kind": "text",
                "source": self.corpus.source,
                "n_lines": len(self.corpus.lines),
                "n_chars": self.corpus.n_chars,
                "sha256": hashlib.sha256(text).hexdigest(),
                "file": "corpus.txt",
            },
            "canaries": {
                "formats": [f.template for f in self.formats],
                "inserted": [c.to_dict() for c in self.canaries],
                "extrapolate": self.extrapolate,
            },
            "training": self.training,
            "metrics": self.metrics,
            "weights": "model.safetensors",
        }
        manifest["integrity"] = {
            "model.safetensors": hashlib.sha256(blob).hexdigest(),
            "corpus.txt": hashlib.sha256(text).hexdigest(),
            **({"documents.json": hashlib.sha256(docs).hexdigest()} if docs else {}),
            "manifest": manifest_hash(manifest),
        }
        atomic_write(out / "model.safetensors", blob)
        atomic_write(out / "corpus.txt", text)
        if docs is not None:
            atomic_write(out / "documents.json", docs)
        atomic_write(out / "model.json", json.dumps(manifest, indent=1).encode())
        self.path = out
        return out


def is_text_model(source: str | Path) -> bool:
    """Whether ``source`` is a text model: a privguard directory of a text kind, or a local
    Hugging Face model (directory, ``.gguf`` file, or ``smollm2``)."""
    if is_hf_source(source):
        return True
    mpath = Path(source) / "model.json"
    if not mpath.is_file():
        return False
    try:
        return json.loads(mpath.read_text()).get("kind") in TEXT_KINDS
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def load_text_target(source: str | Path) -> TextTarget:
    """Load a text model directory written by ``privguard train --model char-lm|hf:...``, or a
    plain local Hugging Face model (no corpus or canaries recorded then)."""
    if is_hf_source(source):
        model, tok, record = load_hf(source)
        return TextTarget(
            HFPredictor(model, tok),
            kind="hf-lm",
            architecture={"type": "hf-causal-lm", **record},
            corpus=None,
            path=Path(record["directory"]),
        )
    d = Path(source)
    manifest = _checked_manifest(d)
    blob = (d / manifest["weights"]).read_bytes()
    text = (d / "corpus.txt").read_bytes()
    contents = [("model.safetensors", blob), ("corpus.txt", text)]
    if "documents.json" in manifest["integrity"]:
        path = d / "documents.json"
        contents.append(("documents.json", path.read_bytes() if path.is_file() else b""))
    for name, content in contents:
        if hashlib.sha256(content).hexdigest() != manifest["integrity"].get(name):
            raise ModelError(
                f"{d / name} was altered after training (checksum mismatch); restore the original "
                "or retrain the model"
            )
    from safetensors.torch import load as load_tensors

    state = load_tensors(blob)
    arch = manifest["architecture"]
    if manifest["kind"] == "char-lm":
        vocab = Vocab(arch["vocab"])
        module = CharMLP(len(vocab), arch["window"], arch["embed"], arch["hidden"])
        module.load_state_dict(state)
        predictor: TextModel = CharLMPredictor(module, vocab)
    else:
        model, tok, record = load_hf(arch["source"])
        if arch.get("lora"):
            from privguard.models.text.lora import add_lora

            add_lora(model, **arch["lora"])
        if record.get("gguf_sha256") and record["gguf_sha256"] != arch.get("gguf_sha256"):
            raise ModelError(
                f"the base model {arch['source']} differs from the one fine-tuned into {d}; "
                "install the same version or fine-tune again"
            )
        if arch.get("tokenizer_sha256") and record["tokenizer_sha256"] != arch["tokenizer_sha256"]:
            raise ModelError(
                f"the tokenizer of the base model {arch['source']} differs from the one {d} was "
                "fine-tuned with (another token -> id mapping); restore the base model's own "
                "tokenizer files or fine-tune again"
            )
        missing = set(arch.get("trained_parameters", [])) - set(state)
        if missing:
            raise ModelError(f"{d} lacks fine-tuned tensors ({len(missing)}); fine-tune again")
        model.load_state_dict(state, strict=False)
        predictor = HFPredictor(model, tok)
    ds = manifest["dataset"]
    lines = text.decode("utf-8").split("\n")[:-1]
    can = manifest.get("canaries") or {}
    return TextTarget(
        predictor,
        kind=manifest["kind"],
        architecture=arch,
        corpus=Corpus(ds["name"], lines, ds.get("source", {})),
        canaries=[Canary.from_dict(c) for c in can.get("inserted", [])],
        training=manifest.get("training"),
        metrics=_metrics(manifest.get("metrics") or {}),
        extrapolate=bool(can.get("extrapolate", False)),
        path=d,
        documents=(
            json.loads((d / "documents.json").read_text())
            if "documents.json" in manifest["integrity"]
            else None
        ),
    )


def _checked_manifest(d: Path) -> dict[str, Any]:
    mpath = d / "model.json"
    if not mpath.is_file():
        raise ModelError(f"{d} has no model.json; it is not a privguard model directory")
    try:
        manifest = json.loads(mpath.read_text())
        integrity = manifest.pop("integrity")
        manifest["weights"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise ModelError(f"{mpath} is not a valid privguard model.json") from None
    if not isinstance(integrity, dict) or manifest_hash(manifest) != integrity.get("manifest"):
        raise ModelError(
            f"{mpath} was altered after training (checksum mismatch); restore the original "
            "or retrain the model"
        )
    for name in (manifest["weights"], "corpus.txt"):
        if not (d / name).is_file():
            raise ModelError(f"{d} is missing {name}; restore it or retrain the model")
    manifest["integrity"] = integrity
    return manifest


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Recorded metrics, with an old ``dp`` record read as today's ``privacy`` record."""
    if isinstance(metrics.get("dp"), dict) and "privacy" not in metrics:
        legacy = metrics["dp"]
        metrics = {k: v for k, v in metrics.items() if k != "dp"}
        metrics["privacy"] = privacy_from_legacy(legacy)
    return metrics
