"""An :class:`~privguard.endpoint.transport.HttpPredictor` given to :func:`adapt` becomes an
:class:`~privguard.endpoint.adapter.EndpointAdapter` (``privguard.endpoint(url, ...)`` returns
one directly): a live HTTP prediction API audited on the user's own split."""

from __future__ import annotations

from typing import Any

from privguard.models.adapters.base import ModelAdapter, register_adapter


def _is_http_predictor(model: Any) -> bool:
    from privguard.endpoint.transport import HttpPredictor

    return isinstance(model, HttpPredictor)


def _endpoint_adapter(model: Any, **options: Any) -> ModelAdapter:
    from privguard.endpoint.adapter import EndpointAdapter

    return EndpointAdapter(model, access=options.get("access"), classes=options.get("classes"))


register_adapter(_is_http_predictor, _endpoint_adapter, name="http endpoint", priority=50)
