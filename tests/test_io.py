"""Durable writes and JSON conversion (privguard._io): old-or-new content, fsync, one sanitiser."""

from __future__ import annotations

import json
import math
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from privguard import _io
from privguard._io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    dumps_json,
    publish_files,
    to_jsonable,
)
from privguard.errors import ConfigError

# -- to_jsonable: what the four sanitisers it replaces did --------------------------------------


def test_numpy_scalars_and_arrays_become_python_numbers_and_lists():
    out = to_jsonable(
        {
            "f32": np.float32(0.5),
            "f64": np.float64(0.25),
            "i64": np.int64(7),
            "u8": np.uint8(255),
            "b": np.bool_(True),
            "arr": np.array([[1, 2], [3, 4]], dtype=np.int32),
            "farr": np.array([0.5, np.nan, np.inf]),
        }
    )
    assert out == {
        "f32": 0.5,
        "f64": 0.25,
        "i64": 7,
        "u8": 255,
        "b": True,
        "arr": [[1, 2], [3, 4]],
        "farr": [0.5, None, None],
    }
    assert type(out["f32"]) is float and type(out["i64"]) is int and type(out["b"]) is bool
    assert json.dumps(out)  # plain JSON types only


def test_non_finite_floats_become_null_at_any_depth():
    # dp_audit._json_safe, webhook._finite and writers.to_jsonable all did this
    value = {"a": [float("nan"), (float("inf"), {"b": -math.inf})], "c": 1.5, "d": None}
    assert to_jsonable(value) == {"a": [None, [None, {"b": None}]], "c": 1.5, "d": None}


def test_paths_tuples_and_plain_values():
    assert to_jsonable((Path("/a/b"), PurePosixPath("c"), "s", True, 3, None)) == [
        "/a/b",
        "c",
        "s",
        True,
        3,
        None,
    ]


def test_non_text_keys_are_written_as_json_writes_them():
    value = {1: "a", 2.5: "b", False: "c", None: "d"}
    assert to_jsonable(value) == {"1": "a", "2.5": "b", "false": "c", "null": "d"}
    assert json.dumps(to_jsonable(value)) == json.dumps(value)  # json's own key conversion


def test_an_unconvertible_value_names_where_it_sits():
    with pytest.raises(TypeError, match=r"report\.attacks\[0\]\.metrics\.auc holds a set"):
        to_jsonable({"attacks": [{"metrics": {"auc": {1}}}]}, "report")
    with pytest.raises(TypeError, match="key of type tuple"):
        to_jsonable({(1, 2): 3})


def test_default_converts_what_json_cannot_hold():
    # the gateway's json.dumps(..., default=str) for evidence objects
    class Thing:
        def __str__(self) -> str:
            return "thing"

    out = to_jsonable({"x": Thing(), "n": np.float32(2.0)}, default=str)
    assert out == {"x": "thing", "n": 2.0}


def test_dumps_json_is_strict_json_with_a_final_newline():
    text = dumps_json({"auc": np.float64("nan"), "é": 1}, indent=1)
    assert text == '{\n "auc": null,\n "\\u00e9": 1\n}\n'
    assert dumps_json({"é": 1}, indent=None, ensure_ascii=False) == '{"é": 1}\n'


# -- atomic writes ------------------------------------------------------------------------------


def test_atomic_write_replaces_the_content_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_bytes(b"old")
    assert atomic_write_bytes(path, b"new content") == path
    assert path.read_bytes() == b"new content"
    atomic_write_text(path, "text é")
    assert path.read_text(encoding="utf-8") == "text é"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json"]


def test_private_files_are_owner_only_and_public_ones_follow_the_umask(tmp_path):
    atomic_write_bytes(tmp_path / "secret", b"x")
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "report", b"x", private=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_content(tmp_path):
    path = tmp_path / "f.json"
    path.write_text('{"old": 1}')
    with pytest.raises(TypeError, match="holds a object"):
        atomic_write_json(path, {"x": object()})
    with pytest.raises(TypeError, match="takes bytes"):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "missing-dir" / "f", b"x")
    assert path.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


def test_atomic_write_json_writes_strict_json(tmp_path):
    path = atomic_write_json(tmp_path / "d.json", {"eps": float("inf"), "k": np.int64(3)}, indent=1)
    assert path.read_text() == '{\n "eps": null,\n "k": 3\n}\n'


def _fd_path(fd: int) -> str:
    return os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name an fd")
def test_the_file_and_its_directory_are_fsynced(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:  # a spy: the real fsync still runs
        synced.append(_fd_path(fd))
        real_fsync(fd)

    monkeypatch.setattr(_io.os, "fsync", recording_fsync)
    path = tmp_path / "weights.safetensors"
    atomic_write_bytes(path, b"w" * 1000)
    assert len(synced) == 2
    file_synced, dir_synced = synced
    # the data under its temporary name in the same directory, then the directory itself
    assert Path(file_synced).parent == tmp_path and Path(file_synced).name.startswith(".weights")
    assert Path(dir_synced) == tmp_path

    synced.clear()
    publish_files(tmp_path / "out", {"a.json": "{}", "artifacts/x.bin": b"x"}, what="the report")
    dirs = {Path(p) for p in synced if Path(p).is_dir()}
    assert {tmp_path / "out", tmp_path / "out" / "artifacts"} <= dirs
    assert len(synced) - len([p for p in synced if Path(p).is_dir()]) >= 2  # both files


_CHILD = """
import sys
from privguard._io import atomic_write_bytes
print("ready", flush=True)
while True:
    atomic_write_bytes(sys.argv[1], bytes([int(sys.argv[2])]) * (8 << 20))
"""


def test_a_killed_writer_leaves_the_old_or_the_new_content_never_a_part(tmp_path):
    path = tmp_path / "big.bin"
    old = b"\x01" * (8 << 20)
    path.write_bytes(old)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for delay in (0.05, 0.2, 0.5):
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), "2"], stdout=subprocess.PIPE, env=env
        )
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        data = path.read_bytes()
        assert data in (old, b"\x02" * (8 << 20)), f"a torn file after kill at {delay} s"


# -- publishing several files -------------------------------------------------------------------


def test_publish_files_writes_all_and_replaces_old_versions(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("old")
    (out / "keep.txt").write_text("untouched")
    paths = publish_files(out, {"report.json": "new", "artifacts/a.npz": b"\x00\x01"})
    assert paths == {"report.json": out / "report.json", "artifacts/a.npz": out / "artifacts/a.npz"}
    assert (out / "report.json").read_text() == "new"
    assert (out / "artifacts" / "a.npz").read_bytes() == b"\x00\x01"
    assert (out / "keep.txt").read_text() == "untouched"
    # no temporary directory beside or inside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert sorted(p.name for p in out.iterdir()) == ["artifacts", "keep.txt", "report.json"]


def test_publish_files_failure_is_a_one_line_config_error_and_cleans_up(tmp_path):
    out = tmp_path / "report"
    (out / "report.html").mkdir(parents=True)  # a directory where a file must go
    with pytest.raises(ConfigError, match=r"could not write the report into .*report"):
        publish_files(out, {"report.html": "<html>"}, what="the report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        publish_files(blocker / "sub", {"x": "y"})


def test_out_directory_creates_nested_dirs_and_refuses_a_file(tmp_path: Path) -> None:
    made = _io.out_directory(tmp_path / "a" / "b")
    assert made == tmp_path / "a" / "b" and made.is_dir()
    assert _io.out_directory(made) == made  # an existing directory is fine
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"file exists and is not a directory; choose another"):
        _io.out_directory(f)
    assert f.read_text() == "x"


def test_savers_refuse_an_out_path_that_is_a_file(tmp_path: Path) -> None:
    import privguard
    from privguard.audit.dp_audit import DPAuditResult, write_dp_audit

    f = tmp_path / "taken"
    f.write_text("x")
    target = privguard.train("digits", privguard.TrainConfig(model="logreg", epochs=1))
    with pytest.raises(ConfigError, match="not a directory"):
        target.save(f)
    with pytest.raises(ConfigError, match="not a directory"):
        write_dp_audit(object.__new__(DPAuditResult), f)
    assert f.read_text() == "x"
