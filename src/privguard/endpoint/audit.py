"""A whole audit through the HTTP oracle: :func:`audit_endpoint`.

With the model directory (``--model DIR``) the evaluator knows who the members are (model.json
records the split) while the attacks only talk HTTP; without it, only inversion attacks are
scored, with the metrics that need no member list (the engine's ``members_known=False``
option: :func:`privguard.audit.engine.select`). See docs/endpoint-audit.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from privguard.endpoint.access import check_access
from privguard.endpoint.mapping import EndpointMap
from privguard.endpoint.target import endpoint_target
from privguard.endpoint.transport import HttpPredictor
from privguard.errors import AccessError, DataError
from privguard.oracle import Access

Progress = Callable[[str, int, int], None]


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
    from privguard.attacks import normalise
    from privguard.audit.engine import select
    from privguard.audit.runner import audit

    predictor = HttpPredictor(url, api_key, mapping=mapping, **(predictor_options or {}))
    members_known = model is not None
    try:
        wanted = predictor.access if access is None else Access.parse(access)
        check_access(wanted, predictor.access)
        names = normalise(attacks)
        _refuse_whitebox(names)
        # unknown names, access errors and families that need member truth before any query
        select(names, wanted, members_known=members_known)
        target = endpoint_target(predictor, model, data=data, seed=seed, label=label)
        ds = target.load_data(data if model is not None else None, label=label)
        if tuple(ds.input_shape) != predictor.input_shape or ds.n_classes != predictor.n_classes:
            raise DataError(
                f"the endpoint takes inputs of shape {predictor.input_shape} and answers "
                f"{predictor.n_classes} classes, but the data ({ds.name}) has shape "
                f"{tuple(ds.input_shape)} and {ds.n_classes} classes; audit it with the data "
                "its model was trained on"
            )
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
            members_known=members_known,
            **audit_options,
        )
    finally:
        predictor.close()
    report.target["endpoint"] = predictor.describe()
    report.plan["endpoint"] = predictor.url
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
