"""The serving gateway's commands (docs/gateway.md): ``serve``, ``keys``, ``seal``, ``purge``
and ``monitor fit``. Each imports the gateway (FastAPI, SQLAlchemy) only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from privguard.cli._common import DB_HELP, check_out, err, name_column, out, progress
from privguard.errors import ConfigError

keys_app = typer.Typer(
    help="API keys of the gateway: create (prints the secret once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
monitor_app = typer.Typer(
    help="The gateway's query monitor (attack detectors, docs/monitoring.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@monitor_app.command("fit")
def monitor_fit(
    model: Path = typer.Option(..., help="Model directory the gateway serves."),
    out_dir: Path = typer.Option(..., "--out", help="Where to save the monitor."),
    target_fpr: float = typer.Option(
        0.01, help="Share of benign clients each detector may flag (calibration target)."
    ),
    seed: int = typer.Option(0, help="Seeds the calibration shuffles and the PCA."),
    sorted_orders: int = typer.Option(
        8,
        help="Class-sorted benign streams to calibrate on too: clients that query one class "
        "at a time are then not flagged, at some cost to PRADA (docs/monitoring.md); 0 for "
        "shuffled streams only.",
    ),
) -> None:
    """Calibrate the attack detectors on the model's own data (its members as natural
    traffic, its held-out records as benign clients) and save them for `[monitor] path`."""
    import privguard
    from privguard.gateway.monitor import Monitor

    if not 0 < target_fpr < 1:
        raise ConfigError("--target-fpr must be between 0 and 1, e.g. 0.01")
    if sorted_orders < 0:
        raise ConfigError("--sorted-orders must be 0 or more")
    check_out(out_dir)
    target = privguard.load_target(model)
    ds = target.load_data()
    split = target.split
    with progress() as update:
        monitor = Monitor(target_fpr=target_fpr).fit(
            ds.x[split.members],
            ds.x[split.nonmembers],
            target.predict_proba,
            seed=seed,
            sorted_orders=sorted_orders,
            progress=update,
        )
    monitor.save(out_dir)
    out.print(
        f"monitor calibrated on {len(split.members)} training and {len(split.nonmembers)} "
        f"held-out records (target false-positive rate {target_fpr:g} per detector); saved to "
        f'{out_dir}/ — point the gateway at it with \\[monitor] path = "{out_dir}"'
    )


def _gateway_db(db: str | None, config: Path | None) -> tuple[Any, Any]:
    """(GatewayConfig, Store) for the key and purge commands."""
    from privguard.gateway.config import ServeSettings
    from privguard.gateway.store import Store

    settings = ServeSettings(model="", config=str(config) if config else None, db=db)
    cfg = settings.load_config()
    store = Store(settings.resolve_db(cfg))
    store.migrate()
    return cfg, store


def serve(
    model: Path = typer.Option(..., help="Model directory, or a file sealed by `privguard seal`."),
    config: Path | None = typer.Option(None, help="gateway.toml: tiers and server settings."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    db: str | None = typer.Option(None, help=DB_HELP),
    redis: str | None = typer.Option(
        None, help="redis://HOST:6379/0: rate limits shared by workers and replicas."
    ),
    workers: int = typer.Option(1, help="Worker processes."),
    tls_cert: Path | None = typer.Option(None, help="PEM certificate: serve HTTPS."),
    tls_key: Path | None = typer.Option(None, help="PEM private key of --tls-cert."),
    seal_key_file: Path | None = typer.Option(
        None, help="Key of a sealed --model [default: $PRIVGUARD_SEAL_KEY]."
    ),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
    monitor_per_worker: bool = typer.Option(
        False,
        "--monitor-per-worker",
        help="Several workers, the query monitor on and no --redis: let each worker watch and "
        "hold clients on its own (otherwise refused; docs/monitoring.md).",
    ),
) -> None:
    """Serve a model behind the gateway: keys, tiers, rate limits, output policies, audit log."""
    from privguard.gateway.config import ServeSettings
    from privguard.gateway.serve import serve as _serve

    settings = ServeSettings(
        model=str(model),
        config=str(config) if config else None,
        db=db,
        redis=redis,
        seal_key_file=str(seal_key_file) if seal_key_file else None,
    )
    _serve(
        settings,
        host=host,
        port=port,
        workers=workers,
        tls_cert=str(tls_cert) if tls_cert else None,
        tls_key=str(tls_key) if tls_key else None,
        log_level=log_level,
        monitor_per_worker=monitor_per_worker,
        on_ready=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True),
    )


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., help="The client's name (recorded in the query log)."),
    role: str = typer.Option("client", help="client or admin."),
    tier: str | None = typer.Option(None, help="The key's tier, a [tiers.NAME] of the config."),
    expires: float | None = typer.Option(None, help="Days until the key expires."),
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(None, help="gateway.toml, to check --tier against."),
    owner: str | None = typer.Option(
        None,
        help="The account or organisation the key belongs to: the query monitor also "
        "watches all keys of one owner together.",
    ),
) -> None:
    """Create a key and print its secret (shown this once; only a hash is stored)."""
    from privguard.gateway.keys import create_key

    cfg, store = _gateway_db(db, config)
    if config and tier and tier not in cfg.tiers:
        raise ConfigError(f"no tier {tier!r} in {config}; use one of: {', '.join(cfg.tiers)}")
    info, secret = create_key(store, name, role, tier, expires_days=expires, owner=owner)
    store.close()
    err.print(
        f"created {info.role} key {info.id} for {info.name!r} (tier {info.tier}); "
        "its secret follows, shown this once:",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    print(secret)


@keys_app.command("list")
def keys_list(
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(None, help="gateway.toml (for its [server] db)."),
) -> None:
    """List the keys (never their secrets)."""
    from rich.table import Table
    from rich.text import Text

    from privguard.gateway.keys import list_keys

    _, store = _gateway_db(db, config)
    table = Table("name", "role", "tier", "created", "expires", "status")
    table.columns.insert(0, name_column("id"))
    for k in list_keys(store):
        table.add_row(*(Text(c) for c in k.display_row()))  # escaped, never read as markup
    store.close()
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key's id (see `privguard keys list`)."),
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(None, help="gateway.toml (for its [server] db)."),
) -> None:
    """Revoke a key (running gateways refuse it within their key cache time, 5 s by default)."""
    from privguard.gateway.keys import revoke_key

    _, store = _gateway_db(db, config)
    info = revoke_key(store, key_id)
    store.close()
    if info is None:
        raise ConfigError(f"no key {key_id!r}; see `privguard keys list`")
    out.print(f"revoked {info.id} ({info.name})")


def seal(
    directory: Path = typer.Argument(..., help="Model directory to encrypt."),
    key_file: Path = typer.Option(..., help="Key file (created, mode 0600, if it does not exist)."),
    out_file: Path | None = typer.Option(
        None, "--out", help="Sealed file to write [default: DIRECTORY.sealed]."
    ),
) -> None:
    """Encrypt a model directory at rest (AES-256-GCM); `serve` loads it with the key."""
    from privguard.gateway.seal import new_key_file, read_key_file
    from privguard.gateway.seal import seal as _seal

    if key_file.exists():
        key = read_key_file(key_file)
    else:
        key = new_key_file(key_file)
        err.print(f"created a new key in {key_file} (mode 0600): keep it apart from the model")
    target = out_file or directory.with_name(directory.name + ".sealed")
    written = _seal(directory, key, target)
    out.print(f"sealed {directory} -> {written}")


def purge(
    db: str | None = typer.Option(None, help=DB_HELP),
    config: Path | None = typer.Option(
        None, help="gateway.toml: its [server] log_retention_days also ages out log rows."
    ),
) -> None:
    """Delete retained inputs past their retention (and log rows past log_retention_days)."""
    cfg, store = _gateway_db(db, config)
    removed = store.purge(log_retention_days=cfg.server.log_retention_days)
    store.close()
    out.print(
        f"purged {removed['query_inputs']} retained input row(s) and "
        f"{removed['query_log']} log row(s)"
    )
