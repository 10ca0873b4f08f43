"""Audit a live prediction endpoint: the HTTP oracle, its mapping, and the endpoint audit.

:class:`HttpPredictor` implements the :class:`~privguard.oracle.Predictor` protocol over HTTP
(httpx), so every black-box and label-only attack runs unchanged against a running privguard
gateway (``privguard serve``) or any JSON prediction API described by a small mapping file
(:class:`EndpointMap`). The attacks talk HTTP only; what an answer reveals is what the server
sends back for the key in use:

- ``probs`` (and ``logits``) answers are used as they are;
- ``topk`` answers become rows holding the top-k scores at their classes and zeros elsewhere;
- ``label`` answers become one-hot rows;
- an abstained record (label ``-1``, or a row of zeros) becomes a row of zeros, which
  :meth:`privguard.oracle.Oracle.labels` reads back as :data:`~privguard.oracle.ABSTAIN`.

The access level of the resulting oracle is what the server says the key gets (``GET
/v1/model``), capped by the output policy it applies; gradients are never served over HTTP, so
white-box attacks are refused.

Accounting. :attr:`HttpPredictor.queries` counts the records the server answered,
:attr:`HttpPredictor.requests` the HTTP requests sent (retries included),
:attr:`HttpPredictor.rate_limited` the 429 answers and :attr:`HttpPredictor.waited_seconds`
the time spent obeying their ``Retry-After``. A 429 whose wait exceeds ``max_retry_after`` (the
gateway's daily budget answers with a wait until the next UTC midnight) raises
:class:`~privguard.errors.BudgetExhaustedError`; 401 / 403 raise
:class:`~privguard.errors.AccessError`; connection failures and 502 / 503 / 504 are retried a
bounded number of times with exponential back-off.

:func:`audit_endpoint` runs a whole audit through the HTTP oracle. With the model directory
(``--model DIR``) the evaluator knows who the members are (model.json records the split) while
the attacks only talk HTTP; without it, only inversion attacks are scored, with the metrics that
need no member list. See docs/endpoint-audit.md.

The package, one concern per module: :mod:`~privguard.endpoint.mapping` (:class:`EndpointMap`,
:func:`extract`), :mod:`~privguard.endpoint.transport` (:class:`HttpPredictor`, retries and
429 handling), :mod:`~privguard.endpoint.access` (:func:`read_api_key`, :func:`check_access`,
what an output policy leaves), :mod:`~privguard.endpoint.target` (:class:`EndpointTarget`) and
:mod:`~privguard.endpoint.audit` (:func:`audit_endpoint`). The names below are importable from
the package itself; they load on first use, so importing the mapping alone stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from privguard.endpoint.access import check_access, read_api_key
    from privguard.endpoint.audit import audit_endpoint
    from privguard.endpoint.mapping import EndpointError, EndpointMap, extract
    from privguard.endpoint.target import EndpointTarget, endpoint_target
    from privguard.endpoint.transport import HttpPredictor

_HOMES = {
    "EndpointError": "mapping",
    "EndpointMap": "mapping",
    "extract": "mapping",
    "HttpPredictor": "transport",
    "check_access": "access",
    "read_api_key": "access",
    "EndpointTarget": "target",
    "endpoint_target": "target",
    "audit_endpoint": "audit",
}

__all__ = [
    "EndpointError",
    "EndpointMap",
    "EndpointTarget",
    "HttpPredictor",
    "audit_endpoint",
    "check_access",
    "endpoint_target",
    "extract",
    "read_api_key",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'privguard.endpoint' has no attribute {name!r}")
    return getattr(import_module(f"privguard.endpoint.{home}"), name)
