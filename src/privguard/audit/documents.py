"""Document membership audits of language models: was this document in the fine-tuning set,
and does the model repeat it?

The target is a Hugging Face causal LM (a plain directory, or one ``privguard train --model
smollm2 --data DOCS --epochs N`` wrote, which records its member / non-member documents); the
auditor gives the documents it was fine-tuned on (members) and held-out documents from the same
source (non-members), and optionally the base model it came from (``reference``). The attacks
(``privguard attacks``, kind ``documents``): ``text-loss``, ``text-zlib``, ``text-lowercase``,
``min-k``, ``min-k-plus-plus``, ``text-reference``, ``blind-baseline`` (membership family) and
``discoverable-extraction`` (memorization family), run by the one engine
(:mod:`privguard.audit.engine`) against a :class:`~privguard.audit.truth.DocumentTruth`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from privguard.audit import engine
from privguard.audit.report import Report
from privguard.errors import ConfigError, DataError
from privguard.models.text.tokenizer_fit import (
    PROBE_DOCS,
    check_same_tokenization,
    check_tokenizer,
)
from privguard.oracle import Access

MAX_TOKENS = 128  # tokens per scored window


def document_audit(
    target: Any,
    *,
    members: str | Path | Sequence[str] | None = None,
    nonmembers: str | Path | Sequence[str] | None = None,
    reference: str | None = None,
    text_column: str | None = None,
    attacks: Sequence[str] | str = ("all",),
    access: Access | str = Access.PROBS,
    seed: int = 0,
    budget: int | None = None,
    max_tokens: int = MAX_TOKENS,
    progress: Any = None,
    command: str | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """Audit a language model's fine-tuning documents.

    Args:
        target: a :class:`~privguard.models.text.TextTarget` or a Hugging Face model directory
            (``hf:DIR`` accepted), or a directory ``privguard train`` wrote.
        members / nonmembers: document files (``.txt`` one per line, ``.jsonl`` with ``text``,
            ``.csv`` with ``text_column``, a folder of ``.txt``) or lists of strings; by default
            those the target's directory records.
        reference: the base model (``hf:DIR``, a directory, or ``smollm2``) for
            ``text-reference``; it must share the target's vocabulary.

    Example:
        >>> report = document_audit("tuned-lm", members="train.jsonl",
        ...                         nonmembers="heldout.jsonl", reference="smollm2")
    """
    from privguard.attacks.membership.documents import DocumentKnowledge
    from privguard.attacks.registry import normalise
    from privguard.audit.runner import finish_report
    from privguard.audit.truth import DocumentTruth
    from privguard.data.documents import check_split, load_documents
    from privguard.models.text import TextTarget, load_text_target

    checked = engine.check_settings(settings)
    if not isinstance(target, TextTarget):
        target = load_text_target(str(target).removeprefix("hf:"))
    if target.kind != "hf-lm":
        raise ConfigError("document membership needs a Hugging Face causal LM (hf:DIR)")
    check_tokenizer(target.predictor, what="the target model")
    access = Access.parse(access)
    if budget is not None and budget < 1:
        raise ConfigError("--budget must be a positive number of queries")
    if max_tokens < 2:
        raise ConfigError("max_tokens must be at least 2")
    recorded = target.documents or {}
    docs = {}
    for role, given in (("members", members), ("nonmembers", nonmembers)):
        if given is None:
            if role not in recorded:
                raise ConfigError(
                    "a document audit needs --members and --nonmembers document files (or a "
                    "model directory from `privguard train --epochs` that records them)"
                )
            docs[role] = list(recorded[role])
        elif isinstance(given, str | Path):
            docs[role] = load_documents(given, text_column=text_column)
        else:
            docs[role] = [str(d) for d in given]
            if any(not d.strip() for d in docs[role]):
                raise DataError(f"the {role} include empty documents; remove them")
    check_split(docs["members"], docs["nonmembers"])
    probe = docs["members"][: PROBE_DOCS // 2] + docs["nonmembers"][: PROBE_DOCS // 2]
    check_tokenizer(target.predictor, probe, what="the target model")
    truth = DocumentTruth.build(docs["members"], docs["nonmembers"], seed)
    ref_model, ref_record = _reference(reference, target, probe)
    knowledge = DocumentKnowledge(
        list(truth.candidates), reference=ref_model, max_tokens=max_tokens, seed=seed
    )
    names = normalise(attacks, kind="documents")
    chosen = engine.select(names, access)
    done = engine.run(
        chosen,
        asked=names,
        knowledge=knowledge,
        truth=truth,
        oracle_for=lambda cls, i: target.text_oracle(budget),
        settings=checked,
        progress=progress,
        subject="this language model's documents",
    )
    lengths = [len(s[0]) for s in knowledge._cache.get("target-stats", [])]
    data: dict[str, Any] = {
        "kind": "documents",
        "members": len(docs["members"]),
        "nonmembers": len(docs["nonmembers"]),
        "max_tokens": max_tokens,
        "windowing": f"documents longer than {max_tokens} tokens are scored in consecutive "
        f"windows of {max_tokens} tokens and stay one record",
    }
    if lengths:
        data["tokens_mean"] = round(sum(lengths) / len(lengths), 1)
        data["windowed_documents"] = sum(n > max_tokens for n in lengths)
    return finish_report(
        done,
        target={**target.describe(), "reference": ref_record},
        data=data,
        access=access,
        plan={"seed": seed, "budget": budget, "reference": reference},
        settings=checked,
        command=command,
        advice=False,
    )


def _reference(
    reference: str | None, target: Any, probe: list[str]
) -> tuple[Any, dict[str, Any] | None]:
    """The base model as a text model, refused when it does not tokenize as the target does or
    its own tokenizer does not fit it."""
    if reference is None:
        return None, None
    from privguard.models.text.hf import HFPredictor, load_hf

    model, tok, record = load_hf(reference.removeprefix("hf:"))
    check_same_tokenization(target.predictor.tok, tok, probe, reference)  # type: ignore[attr-defined]
    ref = HFPredictor(model, tok)
    check_tokenizer(ref, probe, what=f"the reference model {reference}")
    return ref, record
