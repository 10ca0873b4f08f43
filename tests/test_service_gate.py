"""PRIVGUARD_REQUIRE_SERVICES=1 (set by .ci/run) turns a missing service from a skip into a
failure: checked with real pytest runs against addresses where nothing listens."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
NOBODY_REDIS = "redis://127.0.0.1:1/0"
NOBODY_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:1/test"


def _pytest(args: list[str], cwd: Path, require: bool) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(TESTS)]),
        "PRIVGUARD_TEST_REDIS": NOBODY_REDIS,
        "PRIVGUARD_TEST_POSTGRES": NOBODY_POSTGRES,
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PRIVGUARD_REQUIRE_SERVICES", None)
    if require:
        env["PRIVGUARD_REQUIRE_SERVICES"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Two tests using the gateway conftest's real ``redis_url`` and ``postgres_url``."""
    d = tmp_path_factory.mktemp("service-gate")
    (d / "conftest.py").write_text(
        textwrap.dedent(
            f"""
            import importlib.util

            spec = importlib.util.spec_from_file_location(
                "gateway_conftest", {str(TESTS / "gateway" / "conftest.py")!r}
            )
            gateway = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(gateway)
            redis_url = gateway.redis_url
            postgres_url = gateway.postgres_url
            """
        )
    )
    (d / "test_needs_services.py").write_text(
        "def test_uses_redis(redis_url):\n    assert redis_url\n\n\n"
        "def test_uses_postgres(postgres_url):\n    assert postgres_url\n"
    )
    return d


def test_missing_services_skip_on_a_laptop_saying_why(project):
    run = _pytest([], project, require=False)
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "2 skipped" in out, out[-2000:]
    assert f"Redis not reachable at {NOBODY_REDIS}" in out, out[-2000:]  # -rs shows reasons
    assert f"PostgreSQL not reachable at {NOBODY_POSTGRES}" in out, out[-2000:]


def test_missing_services_fail_under_privguard_require_services(project):
    run = _pytest([], project, require=True)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "2 errors" in out and "skipped" not in out, out[-2000:]
    assert f"Redis not reachable at {NOBODY_REDIS}" in out, out[-2000:]
    assert f"PostgreSQL not reachable at {NOBODY_POSTGRES}" in out, out[-2000:]
    assert "PRIVGUARD_REQUIRE_SERVICES=1: a missing service or tool fails the run" in out
