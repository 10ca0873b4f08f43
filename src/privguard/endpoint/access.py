"""What an endpoint key may ask: the API key file, the access an output policy leaves, and the
refusal to ask an endpoint for more than it grants (used by the
:class:`~privguard.endpoint.transport.HttpPredictor` and by
:func:`~privguard.endpoint.audit.audit_endpoint`).
"""

from __future__ import annotations

from pathlib import Path

from privguard.errors import AccessError, ConfigError
from privguard.oracle import Access


def read_api_key(path: str | Path) -> str:
    """The secret in an API key file (first non-empty line, whitespace stripped)."""
    p = Path(path)
    try:
        lines = [ln.strip() for ln in p.read_text().splitlines()]
    except FileNotFoundError:
        raise ConfigError(f"no API key file at {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the API key file {p}: {e}") from None
    key = next((ln for ln in lines if ln), "")
    if not key:
        raise ConfigError(f"the API key file {p} is empty; put the key's secret in it")
    return key


def _policy_cap(access: Access, policy: str | None) -> Access:
    """The access an output policy leaves (as :func:`privguard.defenses.output.protect`)."""
    if not policy:
        return access
    from privguard.defenses.output import parse_policy, policy_access

    try:
        chain = parse_policy(policy)
    except ConfigError:
        return access  # another service's policy name: trust the access it states
    return policy_access(access, chain)


def _policy_k(policy: str | None) -> int | None:
    if not policy:
        return None
    from privguard.defenses.output import parse_policy

    try:
        return parse_policy(policy).k
    except ConfigError:
        return None


def check_access(wanted: Access, granted: Access) -> None:
    """Refuse asking an endpoint for more than it grants (white-box never)."""
    if wanted >= Access.WHITEBOX:
        raise AccessError(
            "white-box attacks need the model's gradients, which an HTTP endpoint never serves; "
            "audit the model directory instead (privguard audit --model DIR --access whitebox)"
        )
    if wanted > granted:
        raise AccessError(
            f"the endpoint gives this key only '{granted.label}' access, not '{wanted.label}'; "
            f"drop --access (it defaults to what the endpoint grants) or use a key whose tier "
            f"allows {wanted.label}"
        )
