"""The admin dashboard: ``/dashboard``, server-rendered HTML for a human watching the gateway.

One page shows the keys (name, role, tier, created, expires, revoked, requests, refused
requests, records answered, last seen) with a form per key to revoke it or move it to another
tier, a chart of queries over time (answered, refused, alerts; drawn on a ``<canvas>`` by a few
lines of hand-written JavaScript from ``/dashboard/api/queries``) and the query monitor's alerts
with their evidence (detector, statistic, threshold, action, fingerprints, time).

Security:

- **Login** with an admin API key (form POST). The key is checked like any API key (hash
  lookup, revoked, expired) and must have the ``admin`` role. A success sets a session cookie
  signed with itsdangerous (HMAC over the key's id, a CSRF token and the time; valid for
  :data:`SESSION_SECONDS`), ``HttpOnly``, ``SameSite=Strict``, ``Path=/dashboard``, and
  ``Secure`` over HTTPS. Every request re-reads the key: revoking an admin key ends its
  sessions at once. The signing key is the gateway's **session key**
  (:func:`privguard.gateway.keyfiles.session_key`), which all workers and replicas of one
  gateway share and which is distinct from the fingerprint key: whoever holds the fingerprint
  key (to recompute log fingerprints) cannot forge an admin session, and rotating either key
  leaves the other alone. Logout deletes the cookie (sessions are not stored server-side, so a
  copied cookie stays valid until it expires, its key is revoked, or the session key rotates).
- **CSRF**: every POST (login included, through a short-lived signed pre-login cookie) carries a
  per-session token in a hidden field, compared in constant time; a POST whose ``Origin`` is
  another site is refused too, and ``SameSite=Strict`` keeps the cookie off cross-site requests.
- **Content-Security-Policy** on every dashboard answer: scripts, styles and fetches only from
  the gateway itself (``'self'``), no inline script, no framing. Templates are autoescaped.

Every revocation and tier change made here is written to the admin trail (``admin_events``, in
the same transaction as the change, with the session's admin key as actor); the page shows the
latest events. A ``client`` filter holding control characters is refused (422).

Revoking a key here drops it from this worker's verified-key cache, so its next request to this
worker is refused (401); other workers refuse it within ``key_cache_seconds``, as with the admin
API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import case, func, select
from starlette.concurrency import run_in_threadpool
from starlette.staticfiles import StaticFiles

from privguard.gateway import keys as keystore
from privguard.gateway.keyfiles import session_key
from privguard.gateway.store import utcnow
from privguard.gateway.store.models import Alert, QueryLog
from privguard.gateway.text import InvalidText, check_text, printable

HERE = Path(__file__).parent
PREFIX = "/dashboard"
SESSION_COOKIE = "privguard_dashboard"
LOGIN_COOKIE = "privguard_dashboard_login"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 3600
CHART_BUCKETS = 60
CHART_MAX_ROWS = 200_000
RANGES = {"15m": 15, "1h": 60, "6h": 360, "24h": 1440, "7d": 10080}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NOTICES = {
    "revoked": "Key {key} revoked: its next query is refused.",
    "tier": "Key {key} moved to tier {tier}.",
    "logout": "Logged out.",
}


@dataclass(frozen=True)
class Session:
    key: keystore.KeyInfo
    csrf: str


class _Static(StaticFiles):
    """The dashboard's script and style sheet, with the dashboard's security headers."""

    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response


def session_secret(session_key: bytes) -> bytes:
    """The cookie-signing key, derived from the gateway's session key (never from the
    fingerprint key)."""
    return hmac.new(session_key, b"privguard-dashboard-session-v2", hashlib.sha256).digest()


def mount_dashboard(app: FastAPI, gw: Any) -> None:
    """Add ``/dashboard`` (pages, JSON for the chart, static files) to the gateway's ``app``;
    ``gw`` is its :class:`~privguard.gateway.service.Gateway`. The routes stay out of the OpenAPI
    schema (they are for browsers, not API clients)."""
    key = getattr(gw, "session_key", None) or session_key(gw.config, gw.store.url)
    secret = session_secret(key)
    sessions = URLSafeTimedSerializer(secret, salt="privguard-dashboard-session")
    logins = URLSafeTimedSerializer(secret, salt="privguard-dashboard-login")
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["when"] = _when
    env.filters["plain"] = _plain
    store = gw.store
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(prefix=PREFIX, model=gw.name, **ctx)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=age,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)

    async def session(request: Request) -> Session | None:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = sessions.loads(raw, max_age=SESSION_SECONDS)
            key_id, csrf = str(data["k"]), str(data["c"])
        except (BadSignature, KeyError, TypeError):
            return None
        key = await run_in_threadpool(keystore.get_key, store, key_id)
        if key is None or key.role != "admin" or key.revoked or key.expired():
            return None
        return Session(key, csrf)

    def refused_text(request: Request, e: InvalidText) -> HTMLResponse:
        return page(request, "error.html.j2", 422, title="Refused", message=str(e))

    def forbidden(request: Request, message: str) -> HTMLResponse:
        return page(request, "error.html.j2", 403, title="Refused", message=message)

    def cross_site(request: Request) -> bool:
        origin = request.headers.get("origin")
        if not origin or origin == "null":
            return origin == "null"
        return urlsplit(origin).netloc != request.headers.get("host", "")

    async def checked_post(request: Request) -> tuple[Session | None, Any, HTMLResponse | None]:
        """The session and form of a POST, or the refusal to send."""
        if cross_site(request):
            return None, None, forbidden(request, "cross-site request refused")
        s = await session(request)
        if s is None:
            return None, None, forbidden(request, "your session has ended; log in again")
        form = await request.form()
        token = form.get("csrf")
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8", "replace"), s.csrf.encode()
        ):
            return None, None, forbidden(request, "missing or wrong CSRF token; reload the page")
        return s, form, None

    # -- login / logout ---------------------------------------------------------------------
    @router.get("/login")
    async def login_form(request: Request, notice: str | None = None) -> Response:
        if await session(request) is not None:
            return redirect(PREFIX)
        token = secrets.token_urlsafe(32)
        response = page(
            request, "login.html.j2", csrf=token, notice=NOTICES.get(notice or "", ""), error=""
        )
        set_cookie(request, response, LOGIN_COOKIE, logins.dumps({"c": token}), LOGIN_SECONDS)
        return response

    @router.post("/login")
    async def login(request: Request) -> Response:
        if cross_site(request):
            return forbidden(request, "cross-site request refused")
        form = await request.form()
        token = form.get("csrf")
        try:
            expected = str(logins.loads(request.cookies.get(LOGIN_COOKIE, ""), LOGIN_SECONDS)["c"])
        except (BadSignature, KeyError, TypeError):
            expected = None
        if not (
            isinstance(token, str)
            and expected
            and hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode())
        ):
            return forbidden(request, "the login form expired or was not ours; load it again")
        secret = form.get("key")
        secret = secret.strip() if isinstance(secret, str) else ""
        key = await run_in_threadpool(keystore.lookup, store, secret) if secret else None
        error, status = "", 200
        if key is None or key.revoked or key.expired():
            error, status = "This key is not a valid, active API key.", 401
        elif key.role != "admin":
            error, status = "This is a client key; the dashboard needs an admin key.", 403
        if error:
            response = page(request, "login.html.j2", status, csrf=token, notice="", error=error)
            return response
        csrf = secrets.token_urlsafe(32)
        response = redirect(PREFIX)
        set_cookie(
            request,
            response,
            SESSION_COOKIE,
            sessions.dumps({"k": key.id, "c": csrf}),
            SESSION_SECONDS,
        )
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        _, _, refused = await checked_post(request)
        if refused is not None:
            return refused
        response = redirect(f"{PREFIX}/login?notice=logout")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")
        return response

    # -- pages --------------------------------------------------------------------------------
    @router.get("")
    async def overview(
        request: Request,
        client: str | None = None,
        done: str | None = None,
        key: str | None = None,
        tier: str | None = None,
    ) -> Response:
        s = await session(request)
        if s is None:
            return redirect(f"{PREFIX}/login")
        client = client[:200] if client else None
        try:
            if client:
                check_text(client, "the client filter")
            data = await run_in_threadpool(_overview, gw, client)
        except InvalidText as e:
            return refused_text(request, e)
        notice = NOTICES.get(done or "", "").format(key=key or "", tier=tier or "")
        detectors = [d.name for d in getattr(gw.monitor, "detectors", [])]
        return page(
            request,
            "dashboard.html.j2",
            me=s.key,
            csrf=s.csrf,
            client=client,
            notice=notice,
            tiers=sorted(gw.config.tiers),
            detectors=detectors,
            ranges=list(RANGES),
            **data,
        )

    @router.get("/api/queries")
    async def queries_json(
        request: Request, span: str = Query("1h", alias="range"), client: str | None = None
    ) -> Response:
        if await session(request) is None:
            return JSONResponse(
                {"error": {"code": "login_required", "message": "log in at /dashboard/login"}},
                status_code=401,
                headers=SECURITY_HEADERS,
            )
        minutes = RANGES.get(span, 60)
        client = client[:200] if client else None
        if client and printable(client) != client:
            return JSONResponse(
                {"error": {"code": "invalid_text", "message": "control character in client"}},
                status_code=422,
                headers=SECURITY_HEADERS,
            )
        data = await run_in_threadpool(_series, store, minutes, client)
        return JSONResponse(data, headers=SECURITY_HEADERS)

    # -- actions ------------------------------------------------------------------------------
    @router.post("/keys/{key_id}/revoke")
    async def revoke(request: Request, key_id: str) -> Response:
        s, _, refused = await checked_post(request)
        if refused is not None:
            return refused
        actor = keystore.Actor.of_key(s.key, "dashboard")
        try:
            info = await run_in_threadpool(keystore.revoke_key, store, key_id, actor=actor)
        except InvalidText as e:
            return refused_text(request, e)
        if info is None:
            return page(request, "error.html.j2", 404, title="No such key", message=key_id)
        gw.forget_key(key_id)  # this worker refuses the key's very next request
        return redirect(f"{PREFIX}?done=revoked&key={quote(key_id)}")

    @router.post("/keys/{key_id}/tier")
    async def change_tier(request: Request, key_id: str) -> Response:
        s, form, refused = await checked_post(request)
        if refused is not None:
            return refused
        tier = form.get("tier")
        if not isinstance(tier, str) or tier not in gw.config.tiers:
            return page(
                request,
                "error.html.j2",
                422,
                title="Unknown tier",
                message=f"choose one of: {', '.join(sorted(gw.config.tiers))}",
            )
        actor = keystore.Actor.of_key(s.key, "dashboard")
        try:
            info = await run_in_threadpool(keystore.set_tier, store, key_id, tier, actor=actor)
        except InvalidText as e:
            return refused_text(request, e)
        if info is None:
            return page(request, "error.html.j2", 404, title="No such key", message=key_id)
        gw.forget_key(key_id)
        return redirect(f"{PREFIX}?done=tier&key={quote(key_id)}&tier={quote(tier)}")

    app.include_router(router)
    app.mount(f"{PREFIX}/static", _Static(directory=HERE / "static"), name="dashboard-static")


# -- data for the pages (run in a worker thread) ----------------------------------------------


def _overview(gw: Any, client: str | None) -> dict[str, Any]:
    store = gw.store
    usage: dict[str, tuple[int, int, int, datetime | None]] = {}
    answered = QueryLog.status == 200
    q = select(
        QueryLog.key_id,
        func.count(),
        func.coalesce(func.sum(case((answered, 0), else_=1)), 0),
        func.coalesce(func.sum(case((answered, QueryLog.n_inputs), else_=0)), 0),
        func.max(QueryLog.time),
    ).group_by(QueryLog.key_id)
    with store.engine.connect() as conn:
        for key_id, n, refused, records, last in conn.execute(q):
            usage[key_id] = (int(n), int(refused), int(records), last)
    keys = []
    for k in keystore.list_keys(store):
        n, refused, records, last = usage.get(k.id, (0, 0, 0, None))
        keys.append(
            {**k.to_dict(), "expired": k.expired(), "requests": n, "refused": refused,
             "records": records, "last_seen": _iso(last)}
        )  # fmt: skip
    alerts = store.alerts(client, 200)
    return {
        "keys": keys,
        "alerts": alerts,
        "alert_total": _count_alerts(store, client),
        "events": store.admin_events(50),
    }


def _count_alerts(store: Any, client: str | None) -> int:
    q = select(func.count()).select_from(Alert)
    if client:
        q = q.where(Alert.client == client)
    with store.engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def _series(store: Any, minutes: int, client: str | None) -> dict[str, Any]:
    """Requests answered and refused, and alerts, per time bucket over the last ``minutes``."""
    now = utcnow()
    span = timedelta(minutes=minutes)
    start = now - span
    width = span.total_seconds() / CHART_BUCKETS
    answered = [0] * CHART_BUCKETS
    refused = [0] * CHART_BUCKETS
    alerts = [0] * CHART_BUCKETS

    def bucket(t: datetime) -> int:
        return min(CHART_BUCKETS - 1, max(0, int((t - start).total_seconds() // width)))

    q = (
        select(QueryLog.time, QueryLog.status)
        .where(QueryLog.time >= start)
        .order_by(QueryLog.time.desc())
        .limit(CHART_MAX_ROWS)
    )
    a = select(Alert.time).where(Alert.time >= start)
    if client:
        q = q.where(QueryLog.client == client)
        a = a.where(Alert.client == client)
    with store.engine.connect() as conn:
        rows = conn.execute(q).all()
        for t, status in rows:
            (answered if status == 200 else refused)[bucket(t)] += 1
        for (t,) in conn.execute(a):
            alerts[bucket(t)] += 1
    return {
        "start": _iso(start),
        "end": _iso(now),
        "bucket_seconds": width,
        "answered": answered,
        "refused": refused,
        "alerts": alerts,
        "truncated": len(rows) >= CHART_MAX_ROWS,
    }


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


# -- template filters ---------------------------------------------------------------------------


def _num(v: Any) -> str:
    """A number as a person reads it: 4 significant digits, integers whole."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
    return str(v)


def _when(v: str | None) -> str:
    """``2025-01-01T12:00:00.123456Z`` -> ``2025-01-01 12:00:00``."""
    if not v:
        return ""
    return v.replace("T", " ").split(".")[0].rstrip("Z")


def _plain(v: Any) -> str:
    """A value of the evidence: numbers via :func:`_num`, lists and objects as compact JSON."""
    if isinstance(v, dict | list):
        return json.dumps(v, separators=(", ", ": "), default=str)[:500]
    return _num(v)
