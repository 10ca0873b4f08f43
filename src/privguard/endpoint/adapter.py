"""An HTTP prediction API as a model the user brings: :class:`EndpointAdapter` and
:func:`connect` (``privguard.endpoint(url, ...)``).

The adapter puts an :class:`~privguard.endpoint.transport.HttpPredictor` behind the
:class:`~privguard.models.adapters.ModelAdapter` interface, so a live endpoint is audited on the
user's own split like any fitted model (docs/byom.md)::

    report = privguard.audit(privguard.endpoint(url, api_key_file="key.txt"),
                             members=train_df, nonmembers=holdout_df, label="y")

- classes / ``n_classes`` / input shape come from the endpoint (the gateway's ``GET /v1/model``
  or the mapping file's ``[model]`` table), or from ``classes=`` given here;
- every query goes through the transport, with its retries, 429 ``Retry-After`` handling and
  record counts (:meth:`EndpointAdapter.describe` reports them in ``report.json``);
- the endpoint's access level (what the key is granted, capped by the output policy the server
  applies) caps the attacks: :func:`privguard.audit` lowers its ``access`` to it, and an
  ``access=`` above it is refused here;
- an endpoint says nothing of how its model was trained, so LiRA, RMIA and shadow models train
  the attacker's proxy (:class:`~privguard.models.adapters.proxy.ProxyRecipe`), and the report
  says so: their numbers are a lower bound.

Answers are used as the server sends them: ``label`` answers are one-hot rows and an abstained
record is a row of zeros (never renormalised), exactly as
:meth:`privguard.oracle.Oracle.labels` expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from privguard.endpoint.access import check_access, read_api_key
from privguard.endpoint.mapping import EndpointMap
from privguard.endpoint.transport import HttpPredictor
from privguard.errors import ConfigError
from privguard.models.adapters.base import ModelAdapter, Recipe, check_proba, class_labels
from privguard.oracle import Access


class EndpointAdapter(ModelAdapter):
    """A model behind an HTTP endpoint, queried through :class:`HttpPredictor`.

    Args:
        http: the transport (its metadata gives the shape, classes and access).
        access: the most the attacks may use (default and maximum: what the endpoint grants).
        classes: the label of each output column, when the endpoint does not name them.

    Attributes:
        max_access: the access level :func:`privguard.audit` caps its ``access`` at.
    """

    framework = "endpoint"

    def __init__(
        self,
        http: HttpPredictor,
        *,
        access: Access | str | None = None,
        classes: Sequence[Any] | None = None,
    ) -> None:
        self.http = http
        self.max_access = http.access if access is None else Access.parse(access)
        check_access(self.max_access, http.access)
        self.n_classes = int(http.n_classes)
        if classes is not None:
            named = class_labels(list(classes))
            if len(named) != self.n_classes or len(set(map(str, named))) != len(named):
                raise ConfigError(
                    f"classes= names {len(named)} distinct classes but the endpoint answers "
                    f"{self.n_classes}; give one label per output column, in order"
                )
            self.classes = named
        else:
            self.classes = list(http.classes)
        self.input_shape = tuple(http.input_shape)
        # the transport sends float32 (JSON numbers); the records are prepared in that dtype
        self.dtype = np.dtype(np.float32)
        self.takes_frame = False
        self.columns = None

    def predict_proba(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        return check_proba(self.http.predict_proba(x), len(x), self.n_classes, who=self._who())

    def predict_logits(self, x: Any) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        return np.asarray(self.http.predict_logits(x), dtype=np.float64)

    def recipe(self) -> Recipe | None:
        from privguard.models.adapters.proxy import ProxyRecipe

        return ProxyRecipe(self.classes)

    def describe(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "type": "HTTP endpoint",
            "endpoint": self.http.url,
            "classes": [str(c) for c in self.classes],
            "access": self.max_access.label,
        }

    def report_target(self) -> dict[str, Any]:
        """What ``report.json``'s ``target`` adds for an endpoint: what it said about itself,
        what the audit spent on it (records answered, requests, 429s) and the access cap."""
        e = self.http.describe()
        e["access_used_at_most"] = self.max_access.label
        e["note"] = (
            "audited through HTTP only: the attacks were capped at the access the endpoint "
            f"grants this key ({self.http.access.label}); reference models are a proxy"
        )
        return {"endpoint": e}

    def fingerprint(self) -> bytes:
        # the served model's parameters are out of reach: the endpoint's identity stands in
        return f"{self.http.url}|{self.http.model_name}".encode()

    def close(self) -> None:
        """Close the HTTP client (the adapter is also a context manager)."""
        self.http.close()

    def __enter__(self) -> EndpointAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _who(self) -> str:
        return f"the endpoint {self.http.url}"


def connect(
    url: str,
    *,
    api_key: str | None = None,
    api_key_file: str | Path | None = None,
    mapping: EndpointMap | dict[str, Any] | str | Path | None = None,
    access: Access | str | None = None,
    classes: Sequence[Any] | None = None,
    **predictor_options: Any,
) -> EndpointAdapter:
    """An HTTP prediction API as a model to audit on your own split (``privguard.endpoint``).

    Args:
        url: a privguard gateway's base URL, or (with ``mapping``) any JSON API's prediction URL.
        api_key / api_key_file: the key's secret, or a file holding it (not both).
        mapping: how to talk to a non-privguard API: an :class:`EndpointMap`, its dict, or a
            TOML / JSON mapping file (docs/endpoint-audit.md).
        access: the most the attacks may use (default and maximum: what the endpoint grants).
        classes: the label of each output column, when the endpoint does not name them.
        **predictor_options: :class:`HttpPredictor`'s ``timeout``, ``retries``,
            ``max_retry_after``, ``max_wait``, ``verify``.

    Raises:
        ConfigError / EndpointError / AccessError: a bad option, an endpoint that does not
            answer, or ``access`` above the endpoint's grant (one line each).

    Example:
        >>> model = privguard.endpoint("http://127.0.0.1:8000", api_key_file="key.txt")
        >>> report = privguard.audit(model, members=train_df, nonmembers=holdout_df, label="y")
    """
    if api_key is not None and api_key_file is not None:
        raise ConfigError("give api_key or api_key_file, not both")
    if api_key_file is not None:
        api_key = read_api_key(api_key_file)
    if isinstance(mapping, dict):
        mapping = EndpointMap.from_dict(mapping)
    elif isinstance(mapping, str | Path):
        mapping = EndpointMap.load(mapping)
    http = HttpPredictor(url, api_key, mapping=mapping, **predictor_options)
    try:
        return EndpointAdapter(http, access=access, classes=classes)
    except BaseException:
        http.close()
        raise
