"""A bounded schemathesis run over the gateway's OpenAPI schema: no input gives a 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from service_gate import skip_or_fail


@pytest.fixture(scope="module")
def fuzzed_server(model_dir, tmp_path_factory):
    """A gateway of its own: schemathesis learns key ids from the responses it gets (even
    without its stateful phase) and then revokes and re-tiers those keys, the admin's included,
    which would break every later test sharing a server."""
    from conftest import _launch

    tmp = tmp_path_factory.mktemp("gw-fuzz")
    s = _launch(tmp, model_dir, f"sqlite:///{tmp / 'log.db'}", [], True, "sqlite")
    try:
        s.proc.wait_ready(180)
        yield s
    finally:
        s.proc.stop()


@pytest.mark.slow
def test_fuzzing_the_openapi_schema_finds_no_server_error(fuzzed_server, tmp_path):
    """Every operation, with the admin key (whose tier, probs, also lets it predict)."""
    s = fuzzed_server
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.exists():
        found = shutil.which("schemathesis")
        if found is None:
            skip_or_fail("the schemathesis CLI is not installed (pip install -e '.[test]')")
        exe = Path(found)
    cmd = [
        str(exe),
        "--no-color",
        "run",
        f"{s.url}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "15",
        "--tls-verify",
        str(s.proc.verify),
        "--header",
        f"Authorization: Bearer {s.admin}",
        "--generation-deterministic",
        "--phases",
        "examples,coverage,fuzzing",
        "--request-timeout",
        "20",
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "not_a_server_error" in out or "passed" in out.lower(), out[-2000:]
