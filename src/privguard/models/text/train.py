"""``privguard train`` for a text model: load the corpus, insert canaries, train or fine-tune.

``char-lm`` trains privguard's character LM (:mod:`.char_train`, optionally with DP-SGD);
``smollm2`` and ``hf:PATH`` fine-tune a local Hugging Face causal LM (:mod:`.hf_tune`).
"""

from __future__ import annotations

from collections.abc import Sequence

from privguard.data.corpus import Canary
from privguard.errors import ConfigError
from privguard.models.text.base import Progress
from privguard.models.text.char_train import LMConfig, train_char_lm
from privguard.models.text.hf_tune import HFTuneConfig, finetune_hf
from privguard.models.text.target import TextTarget


def is_text_model_name(model: str) -> bool:
    """Whether ``privguard train --model`` names a text model: ``char-lm``, ``smollm2`` or
    ``hf:PATH`` (a local Hugging Face model to fine-tune)."""
    return model in ("char-lm", "smollm2") or model.startswith("hf:")


def train_text_target(
    data: str,
    model: str = "char-lm",
    *,
    canaries: Sequence[str] = (),
    repeats: Sequence[int] = (1, 10, 50),
    per_count: int = 1,
    extrapolate: bool = False,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    dp_epsilon: float | None = None,
    dp_delta: float | None = None,
    max_grad_norm: float = 1.0,
    lora_rank: int | None = None,
    lr: float | None = None,
    text_column: str | None = None,
    progress: Progress | None = None,
) -> TextTarget:
    """Load the corpus, insert the canaries, train (``char-lm``) or fine-tune (``smollm2``,
    ``hf:PATH``) — what ``privguard train`` does for a text model.

    Raises:
        ConfigError: a canary format whose space is too large to rank exactly without
            ``extrapolate``, or DP asked for a Hugging Face model.
        DataError: a corpus that is not text.
    """
    from privguard.attacks.memorization.exposure import check_space
    from privguard.data.corpus import insert_canaries, load_corpus

    if not is_text_model_name(model):
        raise ConfigError(f"unknown text model {model!r}; use char-lm, smollm2 or hf:PATH")
    hf = model != "char-lm"
    if hf and (epochs is not None or lora_rank is not None):
        # a fine-tune on documents: whole epochs over a seeded half of them (doc_tune)
        if canaries or steps:
            raise ConfigError(
                "--epochs fine-tunes on documents (members and non-members); canaries are "
                "inserted on the --steps path: give one or the other"
            )
        from privguard.data.documents import load_documents
        from privguard.models.text.doc_tune import DocTuneConfig, finetune_documents

        tune = DocTuneConfig(
            epochs=epochs if epochs is not None else 3,
            seed=seed,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            max_grad_norm=max_grad_norm,
            **({"lora_rank": lora_rank} if lora_rank is not None else {}),
            **({"lr": lr} if lr is not None else {}),
        )
        source = "smollm2" if model == "smollm2" else model.removeprefix("hf:")
        docs = load_documents(data, text_column=text_column)
        return finetune_documents(source, docs, tune, name=str(data), progress=progress)
    check_space(list(canaries), extrapolate=extrapolate, granularity="token" if hf else "char")
    if hf and dp_epsilon is not None:
        raise ConfigError(
            "--dp-epsilon on a Hugging Face model fine-tunes on documents: add --epochs N "
            "(and --lora-rank R); the --steps canary path has no DP"
        )
    corpus = load_corpus(data, seed=seed)
    inserted: list[Canary] = []
    if canaries:
        corpus, inserted = insert_canaries(
            corpus, list(canaries), list(repeats), per_count=per_count, seed=seed
        )
    if hf:
        source = "smollm2" if model == "smollm2" else model.removeprefix("hf:")
        tune = HFTuneConfig(seed=seed, **({"steps": steps} if steps else {}))
        target = finetune_hf(source, corpus, tune, canaries=inserted, progress=progress)
    else:
        config = LMConfig(
            seed=seed,
            dp_epsilon=dp_epsilon,
            dp_delta=dp_delta,
            max_grad_norm=max_grad_norm,
            **({"epochs": epochs} if epochs else {}),
        )
        target = train_char_lm(corpus, config, canaries=inserted, progress=progress)
    target.extrapolate = extrapolate
    return target
