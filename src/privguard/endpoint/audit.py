"""A whole audit through the HTTP oracle: :func:`audit_endpoint`.

With the model directory (``--model DIR``) the evaluator knows who the members are (model.json
records the split) while the attacks only talk HTTP; without it, only inversion attacks are
scored, with the metrics that need no member list. See docs/endpoint-audit.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from privguard.endpoint.mapping import EndpointMap
from privguard.endpoint.target import endpoint_target
from privguard.endpoint.transport import HttpPredictor, check_access
from privguard.errors import AccessError, ConfigError, DataError
from privguard.oracle import Access

Progress = Callable[[str, int, int], None]

# Metrics of an inversion attack that compare reconstructions with the training members; without
# the model directory nobody knows who those are.
MEMBER_METRICS = (
    "mse_to_class_mean",
    "ssim_to_class_mean",
    "nearest_member_distance",
    "nearest_nonmember_distance",
    "member_closeness",
    "member_closeness_pvalue",
)


def audit_endpoint(
    url: str,
    *,
    api_key: str | None,
    mapping: EndpointMap | None = None,
    model: Any = None,
    data: Any = None,
    label: str | None = None,
    attacks: Sequence[str] | str = ("all",),
    access: Access | str | None = None,
    seed: int = 0,
    budget: int | None = None,
    n_jobs: int = 1,
    progress: Progress | None = None,
    command: str | None = None,
    predictor_options: dict[str, Any] | None = None,
    **audit_options: Any,
):
    """Run black-box and label-only attacks against a live endpoint and score them.

    Args:
        url: the gateway's base URL, or a mapped API's prediction URL.
        api_key: the key's secret (``None``: send no auth header).
        mapping: for non-privguard APIs (see :class:`EndpointMap`).
        model: the model directory the endpoint serves: gives the evaluator the member split and
            the attacker the training recipe. Without it only inversion attacks are scored.
        data: the attacker's data (default: the model's recorded data).
        access: what the attacker uses (default and maximum: what the endpoint grants).
        budget: query budget per attack, in records.
        predictor_options: passed to :class:`HttpPredictor` (timeout, retries, waits, verify).
        **audit_options: passed on to :func:`privguard.audit` (sensitive, scheduler, cache_dir).

    Example:
        >>> report = audit_endpoint("http://127.0.0.1:8000", api_key=secret, model="model-dir",
        ...                         attacks=["membership"])
    """
    from privguard.attacks import resolve
    from privguard.audit.runner import audit

    predictor = HttpPredictor(url, api_key, mapping=mapping, **(predictor_options or {}))
    try:
        wanted = predictor.access if access is None else Access.parse(access)
        check_access(wanted, predictor.access)
        names = [attacks] if isinstance(attacks, str) else list(attacks)
        names = [n.strip().lower() for raw in names for n in raw.split(",") if n.strip()]
        _refuse_whitebox(names)
        if model is None:
            names = _without_ground_truth(names, wanted)
        target = endpoint_target(predictor, model, data=data, seed=seed, label=label)
        ds = target.load_data(data if model is not None else None, label=label)
        if tuple(ds.input_shape) != predictor.input_shape or ds.n_classes != predictor.n_classes:
            raise DataError(
                f"the endpoint takes inputs of shape {predictor.input_shape} and answers "
                f"{predictor.n_classes} classes, but the data ({ds.name}) has shape "
                f"{tuple(ds.input_shape)} and {ds.n_classes} classes; audit it with the data "
                "its model was trained on"
            )
        resolve(names, wanted)  # unknown names and access errors before any query
        report = audit(
            target,
            data=ds,
            attacks=names,
            access=wanted,
            seed=seed,
            budget=budget,
            n_jobs=n_jobs,
            progress=progress,
            command=command,
            **audit_options,
        )
    finally:
        predictor.close()
    report.target["endpoint"] = predictor.describe()
    report.plan["endpoint"] = predictor.url
    if model is None:
        _drop_member_metrics(report)
    return report


def _refuse_whitebox(names: list[str]) -> None:
    from privguard.attacks import all_attacks

    by_name = {c.name: c for c in all_attacks()}
    for n in names:
        cls = by_name.get(n)
        if cls is not None and cls.needs >= Access.WHITEBOX:
            raise AccessError(
                f"the {n} attack needs white-box access (the model's gradients), which an HTTP "
                "endpoint never serves; audit the model directory instead (privguard audit "
                f"--model DIR --access whitebox --attacks {n})"
            )


def _without_ground_truth(names: list[str], access: Access) -> list[str]:
    """Without the model directory nobody knows who the members are: keep inversion.

    Membership and attribute scores need the member list; extraction's fidelity is measured on
    held-out non-members, which a split of the attacker's data cannot promise."""
    from privguard.attacks import resolve

    needs_truth = ("membership", "attribute", "extraction")
    for n in names:
        family = n if n in needs_truth else None
        if family is None and n not in ("all", "inversion"):
            family = next((c.family for c in resolve([n], access)), None)
        if family in needs_truth:
            raise ConfigError(
                f"scoring {n} needs to know who the model was trained on: pass --model DIR (the "
                "directory of the served model; its model.json records the split) together "
                "with --endpoint; without it only inversion attacks are scored"
            )
    if "all" in names:
        return ["inversion"]
    return names


def _drop_member_metrics(report: Any) -> None:
    """Without the member list: keep the evaluators' recognition metrics only."""
    from privguard.audit.report import summarise
    from privguard.audit.risk import assess

    for a in report.attacks:
        if a.family != "inversion":
            continue
        for k in MEMBER_METRICS:
            a.metrics.pop(k, None)
        a.notes = [n for n in a.notes if "member" not in n]
        a.notes.append(
            "audited without the model directory: who was trained on is unknown, so member "
            "closeness and distances to training members are not measured (pass --model DIR)"
        )
        a.curves.pop("class_means", None)
        a.risk = assess(a.family, a.metrics)
    skipped = report.summary.get("skipped")
    most = report.summary.get("most_exposed")
    report.summary = summarise(report.attacks)
    if skipped:
        report.summary["skipped"] = skipped
    if most:
        report.summary["most_exposed"] = most
    report.data["split"] = {
        "note": "members unknown (no --model): the attacker's auxiliary pool is a seeded 30% "
        "of the data",
        "aux": report.data.get("split", {}).get("aux"),
    }
    report.data.pop("duplicates", None)
