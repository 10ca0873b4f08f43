"""One redaction helper for every URL or message the gateway and the CLI log or echo.

URLs carry secrets in three places: the password of ``user:password@host`` (database and Redis
URLs), the query string (``?token=...``, ``?sig=...``) and, for webhooks, the path itself
(``https://hooks.example.com/services/T000/B000/XXXX``: the last segments *are* the token).
:func:`redact_url` keeps what identifies the service (scheme, user name, host, port) and masks
the rest; :func:`redact_text` does the same to every URL inside a free-form message (an error
text that echoes a URL). Nothing that may hold a credential is logged or echoed without them.

Example:
    >>> redact_url("redis://:hunter2@cache:6379/0")
    'redis://:***@cache:6379/0'
    >>> redact_url("https://hooks.example.com/services/T0/B0/XXXX?token=abc", path=False)
    'https://hooks.example.com/***'
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MASK = "***"
# scheme://anything-up-to-whitespace-or-quote (what a URL in a message looks like)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact_url(url: str, *, path: bool = True) -> str:
    """``url`` without its password and query string (and without its path when ``path`` is
    false, for webhook URLs whose path is the token). A URL too malformed to parse gives its
    scheme and the mask only."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        return f"{scheme}://{MASK}" if scheme.isalnum() else MASK
    if not parts.scheme:
        return MASK
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        user = parts.username or ""
        netloc = f"{user}:{MASK}@{netloc}" if parts.password is not None else f"{user}@{netloc}"
    out = f"{parts.scheme}://{netloc}"
    if not path:
        return out + (f"/{MASK}" if parts.path.strip("/") or parts.query else "")
    out += parts.path
    if parts.query:
        out += f"?{MASK}"
    return out


def redact_text(text: str, *, path: bool = True) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0), path=path), text)
