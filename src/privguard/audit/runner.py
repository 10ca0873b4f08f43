"""One audit: data and split -> target -> for each attack: oracle, attack, evaluator -> report.

Attacks see only the attacker's knowledge (auxiliary pool, candidate records in a shuffled
order, partial records with the sensitive field hidden, the training recipe); the evaluators
alone hold the truth (who is a member, the hidden values, the members' records).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from privguard._version import __version__
from privguard.attacks import Attack, Compute, Knowledge, normalise
from privguard.audit import engine
from privguard.audit.advice import advise, predictor_utility
from privguard.audit.report import Report
from privguard.audit.truth import TOP_RECORDS, ClassifierTruth, TextTruth
from privguard.data import Dataset
from privguard.defenses.output import parse_policy, policy_access, protect
from privguard.errors import AccessError, ConfigError
from privguard.models import Target, load_target
from privguard.oracle import Access

Progress = Callable[[str, int, int], None]
_Truth = ClassifierTruth  # the name benchmarks and older tests import
__all__ = ["TOP_RECORDS", "audit", "cross_split_twins", "text_audit"]


def audit(
    target: Target | str | Path | Any,
    *,
    members: Any = None,
    nonmembers: Any = None,
    population: Any = None,
    trusted: Sequence[str] = (),
    data: str | Dataset | None = None,
    label: str | None = None,
    attacks: Sequence[str] | str = ("all",),
    access: Access | str = Access.PROBS,
    policy: str | None = None,
    sensitive: str | None = None,
    seed: int = 0,
    budget: int | None = None,
    n_jobs: int = 1,
    scheduler: Any = None,
    cache_dir: str | Path | None = None,
    progress: Progress | bool | None = None,
    command: str | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    members_known: bool = True,
    reference: str | None = None,
    text_column: str | None = None,
    redact: bool = False,
    device: str = "cpu",
) -> Report:
    """Run attacks against ``target`` and score them.

    Args:
        target: a :class:`~privguard.models.Target` or a model directory (a text model's too);
            or a model you trained yourself (a fitted scikit-learn estimator or Pipeline, a
            model file, ...) audited on your split ``members`` / ``nonmembers`` /
            ``population`` (DataFrames with the ``label`` column, ``(X, y)`` arrays, or CSV /
            Parquet / NPZ files; see docs/byom.md). ``trusted``: extra exact type names a
            ``.skops`` file may use.
        data: the data the model was trained on; by default the data recorded in model.json
            (checked against its content hash either way).
        label: label column, for CSV/Parquet data.
        attacks: attack or family names (``privguard attacks`` lists them); ``all`` (the
            default) runs every attack the access level allows and the data suits.
        access: the most an attacker gets per query (``label`` ... ``whitebox``).
        policy: an output policy the answers pass through (``"topk:3,round:2"``; see
            :mod:`privguard.defenses.output`); it caps ``access`` at what it lets through, and
            the attacks that still apply (label-only ones under ``label``) run through it.
        sensitive: the hidden field for attribute inference (tabular data; default: the
            dataset's recorded sensitive field, e.g. ``sex``).
        seed: seeds every random choice of the attacks; the same seed gives the same report.
        budget: query budget per attack (``None``: unlimited).
        n_jobs: local processes for shadow / reference model training.
        scheduler: a Dask scheduler address (or ``distributed.Client``) to train them on instead.
        cache_dir: where trained reference models are kept and reused (``None``: no cache).
        device: ``cpu``, ``cuda`` or ``auto``: where reference models train (stacked) and the
            prior-based inversion trains its generative prior and searches its latent space.
        progress: ``progress(step, done, total)`` callback, or ``True`` for timestamped lines
            on stderr (one per attack, one per 10% of reference models); every attack is also
            logged at INFO on the ``privguard.audit`` logger.
        settings: per-attack settings, ``{"lira-online": {"n_reference": 32}}``, checked against
            what each attack declares (``privguard attacks --settings`` lists them) and
            recorded in the report's ``plan``.
        members_known: ``False`` when who the model was trained on is unknown (an endpoint
            audited without its model directory): families that need member truth are not
            run, and inversion reports no member metrics.
        members, nonmembers (for a language model), reference, text_column: its fine-tuning
            documents, held-out documents and base model: a document membership audit
            (:func:`privguard.audit.documents.document_audit`, docs/llm.md).
        redact: leave the field values of the most exposed records (``summary.most_exposed``)
            out of the report; a ConfigError for data that has none (images, text).

    Example:
        >>> report = privguard.audit("model-dir", attacks=["membership"], access="probs",
        ...                          settings={"lira-online": {"n_reference": 32}})
        >>> report.summary["overall_risk"]
    """
    from privguard._progress import resolve

    progress = resolve(progress)
    from privguard.models.text import TextTarget, is_text_model

    if isinstance(target, TextTarget) or (
        isinstance(target, str | Path) and not trusted and is_text_model(target)
    ):
        if redact:
            raise ConfigError("--redact applies to records with fields; text has none")
        return _text_model_audit(
            target,
            members=members,
            nonmembers=nonmembers,
            reference=reference,
            text_column=text_column,
            data=data,
            attacks=attacks,
            access=access,
            seed=seed,
            budget=budget,
            progress=progress,
            command=command,
            settings=settings,
        )
    if reference is not None or text_column is not None:
        raise ConfigError("--reference and --text-column are for language models' documents")
    # a user's own model on the user's split becomes a Target (privguard.models.user)
    from privguard.models.user import as_user_target

    target = as_user_target(
        target,
        members=members,
        nonmembers=nonmembers,
        population=population,
        label=label,
        trusted=trusted,
        seed=seed,
    )
    if isinstance(target, (str, Path)) and trusted:
        target = load_target(target, trusted=trusted)
    checked = engine.check_settings(settings)
    if not isinstance(target, Target):
        target = load_target(target)
    access = Access.parse(access)
    # a model behind an HTTP endpoint (privguard.endpoint): its grant caps the attacks
    cap = getattr(getattr(target, "adapter", None), "max_access", None)
    if cap is not None:
        access = min(access, cap)
    chain = parse_policy(policy)
    access = policy_access(access, chain)
    if budget is not None and budget < 1:
        raise ConfigError("--budget must be a positive number of queries")
    names = normalise(attacks)
    try:
        chosen = engine.select(names, access, members_known=members_known)
    except AccessError as e:
        if not chain.steps:
            raise
        raise AccessError(
            f"{e} (the output policy '{chain.spec}' lets through only '{access.label}')"
        ) from None
    ds = target.load_data(data, label=label)
    if redact and ds.kind != "tabular":
        raise ConfigError(
            f"--redact hides the field values of tabular records; {ds.kind} data has none to hide"
        )
    truth = ClassifierTruth.build(ds, target.split, seed)
    truth.redact = redact
    # the real model: only the extraction evaluator looks at it (an endpoint audit's target,
    # privguard.endpoint.EndpointTarget, keeps the served model's directory in .local)
    truth.target = getattr(target, "local", None) or target
    truth.audited = target
    truth.members_known = members_known
    if n_jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    knowledge = truth.knowledge(target, ds, sensitive, needs_sensitive=_wants_attribute(chosen))
    from privguard.training.device import resolve_device

    knowledge.compute = Compute(
        n_jobs=n_jobs,
        scheduler=scheduler,
        cache_dir=str(cache_dir) if cache_dir else None,
        device=str(resolve_device(device)),
    )
    predictor = target.predictor

    def oracle_for(cls: type[Attack], i: int) -> Any:
        return protect(predictor, chain, access, budget=budget, seed=seed + i)

    done = engine.run(
        chosen,
        asked=names,
        knowledge=knowledge,
        truth=truth,
        oracle_for=oracle_for,
        settings=checked,
        progress=progress,
    )
    local = truth.target
    utility = None
    if members_known and isinstance(local, Target):
        # the utility guard: a model at or below the majority-class rate is flagged
        s = target.split
        utility = predictor_utility(
            local.predictor, ds.x[s.nonmembers], ds.y[s.nonmembers], ds.y[s.members], ds.n_classes
        )
    # described after every query (an endpoint's target reports what it answered)
    described = target.describe()
    if utility is not None:
        described["utility"] = utility
    data_d = _describe_data(ds, target, knowledge, members_known=members_known)
    return finish_report(
        done,
        target=described,
        data=data_d,
        access=access,
        plan={
            "policy": chain.spec if chain.steps else None,
            "sensitive": knowledge.sensitive.name if knowledge.sensitive else None,
            "seed": seed,
            "budget": budget,
            "n_jobs": n_jobs,
            "scheduler": scheduler if isinstance(scheduler, str) else None,
            "cache_dir": str(cache_dir) if cache_dir else None,
        },
        settings=checked,
        command=command,
    )


def _text_model_audit(
    target: Any,
    *,
    members: Any,
    nonmembers: Any,
    reference: str | None,
    text_column: str | None,
    data: Any,
    **common: Any,
) -> Report:
    """A text model: documents given or recorded -> a document membership audit
    (docs/llm.md); otherwise canary exposure and extraction (:func:`text_audit`)."""
    from privguard.audit.documents import document_audit
    from privguard.models.text import TextTarget, load_text_target

    if isinstance(data, Dataset):
        raise ConfigError("a text model's data is a corpus: a .txt file or a built-in name")
    if not isinstance(target, TextTarget):
        target = load_text_target(target)
    if members is not None or nonmembers is not None or target.documents is not None:
        return document_audit(
            target,
            members=members,
            nonmembers=nonmembers,
            reference=reference,
            text_column=text_column,
            **common,
        )
    if reference is not None:
        raise ConfigError("--reference goes with --members and --nonmembers documents")
    return text_audit(target, data=data, **common)


def text_audit(
    target: Any,
    *,
    data: str | None = None,
    attacks: Sequence[str] | str = ("all",),
    access: Access | str = Access.PROBS,
    seed: int = 0,
    budget: int | None = None,
    progress: Progress | bool | None = None,
    command: str | None = None,
    extrapolate: bool = False,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> Report:
    """Run the memorization attacks against a text model and score them (the text path of
    :func:`audit`, through the same engine).

    Args:
        target: a :class:`~privguard.models.text.TextTarget`, a text model directory, or a local
            Hugging Face model.
        data: the training corpus (a .txt file or built-in name); needed for extraction on a
            plain Hugging Face model, checked against the recorded hash otherwise.
        attacks: ``all``, ``memorization``, ``exposure``, ``extract`` (``extraction`` is
            accepted for ``extract``).
        extrapolate: allow skew-normal extrapolation for candidate spaces too large to rank.

    Example:
        >>> report = text_audit("lm-dir", attacks="memorization")
        >>> report.attacks[0].metrics["exposure_bits_top_repeats"]
    """
    from privguard._progress import resolve
    from privguard.attacks.memorization import TextKnowledge
    from privguard.audit.memorization_eval import PUBLIC_RECORDS, corpus_for, describe_corpus
    from privguard.data.corpus import attacker_text
    from privguard.models.text import TextTarget, load_text_target

    progress = resolve(progress)
    checked = engine.check_settings(settings)
    if not isinstance(target, TextTarget):
        target = load_text_target(target)
    access = Access.parse(access)
    if budget is not None and budget < 1:
        raise ConfigError("--budget must be a positive number of queries")
    corpus = corpus_for(target, data)
    names = normalise(attacks, kind="text")
    chosen = engine.select(names, access)
    knowledge = TextKnowledge(
        formats=target.formats,
        public_lines=attacker_text(n_records=PUBLIC_RECORDS, seed=seed + 10_000),
        extrapolate=bool(extrapolate or target.extrapolate),
        seed=seed,
    )
    truth = TextTruth(canaries=target.canaries, corpus=corpus, seed=seed)
    text_target = target

    def oracle_for(cls: type[Attack], i: int) -> Any:
        return text_target.text_oracle(budget)

    done = engine.run(
        chosen,
        asked=names,
        knowledge=knowledge,
        truth=truth,
        oracle_for=oracle_for,
        settings=checked,
        progress=progress,
        subject="this text model",
    )
    return finish_report(
        done,
        target=target.describe(),
        data=describe_corpus(target, corpus),
        access=access,
        plan={"seed": seed, "budget": budget, "extrapolate": knowledge.extrapolate},
        settings=checked,
        command=command,
        artifacts=False,
    )


def finish_report(
    done: engine.EngineRun,
    *,
    target: dict[str, Any],
    data: dict[str, Any],
    access: Access,
    plan: dict[str, Any],
    settings: dict[str, dict[str, Any]],
    command: str | None,
    advice: bool = True,
    artifacts: bool = True,
) -> Report:
    """The one place an audit path turns the engine's result into a :class:`Report`.

    ``advice`` adds the advice/summary keys (:func:`~privguard.audit.advice.advise`) and the
    trivial-model ``utility_warning``; ``plan`` holds the path's own plan keys, placed between
    the common ``attacks``/``access`` and ``settings``/``command``/``created`` (the order
    report.json has always had); ``artifacts`` keeps the engine's arrays for OUT/artifacts/.
    """
    if advice:
        done.summary.update(advise(done.results, target, data, done.summary, access.label))
        if target.get("utility", {}).get("trivial"):
            done.summary["utility_warning"] = target["utility"]["note"]
    return Report(
        privguard_version=__version__,
        target=target,
        data=data,
        attacks=done.results,
        summary=done.summary,
        plan={
            "attacks": [c.name for c in done.ran],
            "access": access.label,
            **plan,
            **_settings_entry(settings),
            "command": command,
            "created": _now(),
        },
        artifacts=done.artifacts if artifacts else {},
    )


def _settings_entry(checked: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``plan.settings`` in report.json, present only when settings were given (so a report
    of an audit without them keeps the keys it always had)."""
    return {"settings": checked} if checked else {}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wants_attribute(chosen: list[type[Attack]]) -> bool:
    return any(c.family == "attribute" for c in chosen)


def cross_split_twins(x: np.ndarray, members: np.ndarray, nonmembers: np.ndarray) -> int:
    """Non-members whose exact feature vector is also a member's (caps any membership attack)."""
    rows = x.reshape(len(x), -1)
    seen = {rows[i].tobytes() for i in members}
    return int(sum(rows[i].tobytes() in seen for i in nonmembers))


def _describe_data(
    ds: Dataset, target: Target, knowledge: Knowledge, *, members_known: bool = True
) -> dict[str, Any]:
    s = target.split
    d = ds.summary()
    d["split"] = {
        "seed": s.seed,
        "members": len(s.members),
        "nonmembers": len(s.nonmembers),
        "aux": len(s.aux),
        "validation": len(s.validation),
    }
    if knowledge.sensitive is not None:
        d["sensitive"] = {"name": knowledge.sensitive.name, "values": knowledge.sensitive.values}
    twins = cross_split_twins(ds.x, s.members, s.nonmembers)
    note = (
        f"{twins} non-member(s) have an exact twin among the members: no membership attack can "
        "tell those apart, which caps the measurable leak"
        if twins
        else "no non-member duplicates a member's features"
    )
    d["duplicates"] = {"cross_split_twins": twins, "note": note}
    if not members_known:
        d["split"] = {
            "note": "members unknown (no --model): the attacker's auxiliary pool is a seeded "
            "30% of the data",
            "aux": len(s.aux),
        }
        d.pop("duplicates")
    return d
