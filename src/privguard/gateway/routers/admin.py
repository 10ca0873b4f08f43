"""``/v1/admin/*``: keys (create, list, revoke, move to another tier), the query log, the
monitor's alerts and the admin trail. Every route needs an admin key; every key change records
its admin event (actor: the calling admin key) in the change's own transaction."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query

from privguard.errors import PrivguardError
from privguard.gateway import keys as keystore
from privguard.gateway.errors import GatewayError
from privguard.gateway.routers.deps import admin
from privguard.gateway.schemas import (
    ERRORS,
    AdminEventOut,
    AlertOut,
    HoldOut,
    KeyCreate,
    KeyCreated,
    KeyOut,
    KeyPatch,
    QueryRow,
)
from privguard.gateway.service import Gateway, no_key, unknown_tier
from privguard.gateway.text import check_text
from privguard.gateway.watch import account_hold_id


def admin_router(gw: Gateway) -> APIRouter:
    """The admin routes of ``gw``."""
    router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=ERRORS)
    store = gw.store
    tiers = gw.config.tiers

    @router.get("/keys", response_model=list[KeyOut])
    def list_keys(_: keystore.KeyInfo = Depends(admin)) -> list[dict[str, Any]]:
        """Every key (never the secrets)."""
        return [k.to_dict() for k in keystore.list_keys(store)]

    @router.post("/keys", status_code=201, response_model=KeyCreated)
    def create_key(body: KeyCreate, me: keystore.KeyInfo = Depends(admin)) -> dict[str, Any]:
        """Create a key; the secret is in this answer only."""
        if body.tier is not None and body.tier not in tiers:
            raise unknown_tier(body.tier, gw.config)
        try:
            info, secret = keystore.create_key(
                store,
                body.name,
                body.role,
                body.tier,
                expires_days=body.expires_days,
                owner=body.owner,
                actor=keystore.Actor.of_key(me, "api"),
            )
        except PrivguardError as e:
            raise GatewayError(422, "invalid_key", str(e)) from None
        return {**info.to_dict(), "secret": secret}

    @router.delete("/keys/{key_id}", response_model=KeyOut)
    def revoke_key(key_id: str, me: keystore.KeyInfo = Depends(admin)) -> dict[str, Any]:
        """Revoke a key (immediately on this process; within key_cache_seconds elsewhere)."""
        info = keystore.revoke_key(store, key_id, actor=keystore.Actor.of_key(me, "api"))
        if info is None:
            raise no_key(key_id)
        gw.forget_key(key_id)
        return info.to_dict()

    @router.patch("/keys/{key_id}", response_model=KeyOut)
    def patch_key(
        key_id: str, body: KeyPatch, me: keystore.KeyInfo = Depends(admin)
    ) -> dict[str, Any]:
        """Move a key to another tier."""
        keystore.check_key_id(key_id)
        if body.tier not in tiers:
            raise unknown_tier(body.tier, gw.config)
        info = keystore.set_tier(store, key_id, body.tier, actor=keystore.Actor.of_key(me, "api"))
        if info is None:
            raise no_key(key_id)
        gw.forget_key(key_id)
        return info.to_dict()

    @router.get("/queries", response_model=list[QueryRow])
    def queries(
        client: str | None = Query(None, max_length=200),
        limit: int = Query(100, ge=1, le=10_000),
        _: keystore.KeyInfo = Depends(admin),
    ) -> list[dict[str, Any]]:
        """The query log, newest first (fingerprints, never raw inputs)."""
        if client:
            check_text(client, "the client parameter")
        return store.queries(client, limit)

    @router.get("/alerts", response_model=list[AlertOut])
    def alerts(
        client: str | None = Query(None, max_length=200),
        limit: int = Query(100, ge=1, le=10_000),
        _: keystore.KeyInfo = Depends(admin),
    ) -> list[dict[str, Any]]:
        """Findings of the query monitor, newest first."""
        if client:
            check_text(client, "the client parameter")
        return store.alerts(client, limit)

    @router.get("/holds", response_model=list[HoldOut])
    async def holds(_: keystore.KeyInfo = Depends(admin)) -> list[dict[str, Any]]:
        """The query monitor's throttles and blocks in force (from the database); an
        account's hold (``acct_...``, every key of one owner) names the owner."""
        from starlette.concurrency import run_in_threadpool

        rows, keys = await asyncio.gather(
            run_in_threadpool(store.holds), run_in_threadpool(keystore.list_keys, store)
        )
        owners = {account_hold_id(k.owner): k.owner for k in keys if k.owner}
        return [{**r, "account": owners.get(r["key_id"])} for r in rows]

    @router.delete("/holds/{key_id}", response_model=dict[str, bool])
    async def release(key_id: str, _: keystore.KeyInfo = Depends(admin)) -> dict[str, bool]:
        """Lift the monitor's hold on a key (database and Redis: every worker with Redis;
        without it, this worker and, after a restart, all)."""
        keystore.check_key_id(key_id)
        return {"released": await gw.holds.release(key_id)}

    @router.get("/events", response_model=list[AdminEventOut])
    def events(
        limit: int = Query(100, ge=1, le=10_000),
        _: keystore.KeyInfo = Depends(admin),
    ) -> list[dict[str, Any]]:
        """The admin trail, newest first: key creations, revocations and tier changes from the
        API, the dashboard and the CLI, with actor and the values before and after."""
        return store.admin_events(limit)

    return router
