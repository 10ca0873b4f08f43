"""The endpoint as an audit target: :class:`EndpointTarget` and :func:`endpoint_target`.

The served model seen through HTTP only: its predictions come from an
:class:`~privguard.endpoint.transport.HttpPredictor`; the split (who the members are) comes from
the served model's own directory when the auditor has it, else from a seeded split of the
attacker's data.
"""

from __future__ import annotations

from typing import Any

from privguard.data import Dataset, load_dataset, make_split
from privguard.endpoint.transport import HttpPredictor
from privguard.errors import ConfigError
from privguard.models import Target, load_target
from privguard.oracle import Oracle


class EndpointTarget(Target):
    """The served model, seen through HTTP only: its predictor is an :class:`HttpPredictor`.

    ``knows_members`` says whether the split is the served model's own (``local``, its model
    directory) or a seeded split of the attacker's data (members unknown)."""

    def __init__(self, http: HttpPredictor, *, local: Target | None = None, **kw: Any) -> None:
        super().__init__(http, **kw)
        self.http = http
        #: the served model's own directory, when given: truth for evaluators, never attacked
        self.local = local
        self.knows_members = local is not None
        self._data: Dataset | None = None

    def oracle(self, access=None, *, budget: int | None = None) -> Oracle:  # type: ignore[override]
        return self.http.oracle(access, budget=budget)

    def load_data(self, data: Any = None, *, label: str | None = None) -> Dataset:
        if self._data is not None:
            return self._data
        return super().load_data(data, label=label)

    def describe(self) -> dict[str, Any]:
        d = super().describe() if self.knows_members else {"kind": "endpoint"}
        d["endpoint"] = self.http.describe()
        return d


def endpoint_target(
    predictor: HttpPredictor,
    model: Any = None,
    *,
    data: Any = None,
    seed: int = 0,
    label: str | None = None,
) -> EndpointTarget:
    """A :class:`~privguard.models.Target` whose predictions come from ``predictor``.

    With ``model`` (a model directory or Target: the one the endpoint serves) the split, dataset
    record and training recipe are the model's, so the evaluator knows who the members are; the
    local weights are never queried. Without it, ``data`` (a built-in name, a file or a Dataset)
    is split by ``seed`` as ``privguard train`` splits (40 / 30 / 30): the 30% auxiliary share
    is the attacker's pool; the evaluators' classifiers are fitted on all of the data (who was
    trained on is unknown)."""
    if model is not None:
        local = model if isinstance(model, Target) else load_target(model)
        return EndpointTarget(
            predictor,
            local=local,
            kind=local.kind,
            architecture=local.architecture,
            dataset=local.dataset,
            split=local.split,
            config=local.config,
            metrics=local.metrics,
            estimator=local.estimator,
            path=local.path,
        )
    if data is None:
        raise ConfigError(
            "auditing an endpoint needs the attacker's data: pass --data NAME (a built-in "
            "dataset or a file from the same population)"
        )
    ds = data if isinstance(data, Dataset) else load_dataset(str(data), label=label)
    t = EndpointTarget(
        predictor,
        kind="endpoint",
        architecture={"input_shape": list(predictor.input_shape), "n_classes": predictor.n_classes},
        dataset={"name": ds.name, "kind": ds.kind},
        split=make_split(ds.y, seed=seed),
    )
    t._data = ds
    return t
