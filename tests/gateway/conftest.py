"""Fixtures of the gateway tests: a small real model, the real services (PostgreSQL, Redis)
when they answer, and real `privguard serve` processes on loopback shared by the session.

Services: ``PRIVGUARD_TEST_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and ``PRIVGUARD_TEST_REDIS`` (default
``redis://127.0.0.1:6379/0``). Tests that need one skip, saying why, when it does not answer —
or fail, when ``PRIVGUARD_REQUIRE_SERVICES=1`` (CI sets it; see tests/service_gate.py).
Each run keeps its PostgreSQL tables in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import os
import secrets
import textwrap
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from privguard.testing.servers import GatewayProcess
from service_gate import skip_or_fail

POSTGRES = os.environ.get(
    "PRIVGUARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS = os.environ.get("PRIVGUARD_TEST_REDIS", "redis://127.0.0.1:6379/0")

# Tiers of the test servers. key_cache_seconds = 0: a revocation reaches every worker at once.
CONFIG = """
[server]
key_cache_seconds = 0
purge_interval_seconds = 3600
max_body_bytes = 65536
fingerprint_key_file = "{fpkey}"
session_key_file = "{fpkey}.session"
inputs_key_file = "{fpkey}.inputs"

[tiers.label]
access = "label"
policy = "label"
max_batch = 32

[tiers.topk]
access = "topk"
policy = "topk:3,round:2"
max_batch = 32

[tiers.probs]
access = "probs"
policy = "round:3"
max_batch = 32
retain_inputs_days = 7

[tiers.logits]
access = "logits"
max_batch = 32

[tiers.capped]
access = "probs"
policy = "label"
max_batch = 32

[tiers.tight]
access = "label"
rate_limits = "10/minute"
max_batch = 32

[tiers.budget]
access = "label"
daily_budget = 10
max_batch = 8
"""


def _postgres_error() -> str | None:
    try:
        import psycopg

        dsn = POSTGRES.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as e:  # noqa: BLE001 - any failure: skip (or fail), saying why
        return f"PostgreSQL not reachable at {POSTGRES} ({type(e).__name__}: {e})".strip()
    return None


def _redis_error() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except Exception as e:  # noqa: BLE001
        return f"Redis not reachable at {REDIS} ({type(e).__name__}: {e})"
    return None


@contextmanager
def _pg_schema():
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards."""
    import psycopg

    schema = "privguard_test_" + secrets.token_hex(4)
    dsn = POSTGRES.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
    sep = "&" if "?" in POSTGRES else "?"
    try:
        yield f"{POSTGRES}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


@pytest.fixture
def postgres_url():
    skip_or_fail(_postgres_error())
    with _pg_schema() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url():
    skip_or_fail(_redis_error())
    return REDIS


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """The same store tests on SQLite (a file, WAL) and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def model_dir(digits_logreg, tmp_path_factory) -> Path:
    """Softmax regression on digits, saved (the served model)."""
    return digits_logreg.save(tmp_path_factory.mktemp("gw-model") / "digits-logreg")


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (made here with `cryptography`)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_file, key_file = d / "cert.pem", d / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class Server:
    """A running gateway with its admin key, config and database."""

    def __init__(self, proc: GatewayProcess, admin: str, db: str, fpkey: Path, kind: str) -> None:
        self.proc = proc
        self.admin = admin
        self.db = db
        self.fpkey = fpkey
        self.kind = kind

    @property
    def url(self) -> str:
        return self.proc.url

    def client(self, secret: str | None = None, **kw) -> httpx.Client:
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.Client(
            base_url=self.url, headers=headers, verify=self.proc.verify, timeout=30, **kw
        )

    def new_key(self, tier: str | None, role: str = "client", **extra) -> dict:
        with self.client(self.admin) as c:
            r = c.post(
                "/v1/admin/keys",
                json={"name": f"t-{secrets.token_hex(3)}", "role": role, "tier": tier, **extra},
            )
        assert r.status_code == 201, r.text
        return r.json()


def _launch(tmp: Path, model_dir: Path, db: str, extra: list[str], verify, kind: str) -> Server:
    from privguard.gateway.keys import create_key
    from privguard.gateway.store import Store

    fpkey = tmp / "fingerprint.key"
    config = tmp / "gateway.toml"
    config.write_text(textwrap.dedent(CONFIG.format(fpkey=fpkey)))
    store = Store(db)
    store.migrate()
    _, admin = create_key(store, "admin", "admin", "probs")
    store.close()
    proc = GatewayProcess(
        ["--model", str(model_dir), "--config", str(config), "--db", db, *extra],
        log_file=tmp / "serve.log",
        verify=verify,
    ).start()
    return Server(proc, admin, db, fpkey, kind)


@pytest.fixture(scope="session")
def _servers(model_dir, tls_files, tmp_path_factory):
    """Start both test servers at once (their start-ups overlap): SQLite + HTTPS with one
    worker, and PostgreSQL + Redis with two workers (when those services answer)."""
    cert, key = tls_files
    tmp = tmp_path_factory.mktemp("gw-sqlite")
    servers: dict[str, Server | str] = {
        "sqlite": _launch(
            tmp,
            model_dir,
            f"sqlite:///{tmp / 'log.db'}",
            ["--tls-cert", str(cert), "--tls-key", str(key)],
            str(cert),
            "sqlite",
        )
    }
    why = _postgres_error() or _redis_error()
    with ExitStack() as stack:
        if why:
            servers["postgres"] = why
        else:
            servers["postgres"] = _launch(
                tmp_path_factory.mktemp("gw-pg"),
                model_dir,
                stack.enter_context(_pg_schema()),
                ["--redis", REDIS, "--workers", "2"],
                True,
                "postgres",
            )
        yield servers
        for s in servers.values():
            if isinstance(s, Server):
                s.proc.stop()


def _ready(servers, kind: str) -> Server:
    s = servers[kind]
    if isinstance(s, str):
        skip_or_fail(s)
    try:
        s.proc.wait_ready(180)
    except Exception as e:  # noqa: BLE001 - show the server's log
        log = (s.proc.log_file.read_text() if s.proc.log_file else "")[-3000:]
        raise AssertionError(f"{kind} gateway did not start: {e}\n{log}") from None
    return s


@pytest.fixture(params=["sqlite", "postgres"])
def server(request, _servers) -> Server:
    """Each server test runs on SQLite (1 worker, HTTPS) and PostgreSQL + Redis (2 workers)."""
    return _ready(_servers, request.param)


@pytest.fixture
def sqlite_server(_servers) -> Server:
    return _ready(_servers, "sqlite")


@pytest.fixture
def redis_server(_servers) -> Server:
    return _ready(_servers, "postgres")
