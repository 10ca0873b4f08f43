"""Issue 14, the HTTP row: a live JSON prediction API audited on the user's own split
(``privguard.endpoint(...)`` / ``privguard audit --endpoint URL --members F --nonmembers F``).

The endpoint is a real HTTP server on loopback (``http.server``) in front of a real overfit
scikit-learn random forest; it speaks its own JSON (``{"instances": ...}`` ->
``{"probs": ...}``), described by a mapping file, and counts the records it answers. Nothing is
mocked: the attacks only talk HTTP, and the test knows who the forest was trained on."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

import privguard
from privguard.cli import main
from privguard.errors import AccessError, DataError, PrivguardError

N_FEATURES = 6
# cheap settings: 2 reference models each (the defaults train 8-16)
SETTINGS = {"lira-offline": {"n_reference": 2}, "rmia": {"n_reference": 2}}
ATTACKS = ["loss-threshold", "lira-offline", "rmia", "label-only-boundary"]


class ModelServer:
    """A third-party-style JSON API serving ``model`` on loopback; counts what it answers."""

    def __init__(self, model, *, labels_only: bool = False) -> None:
        self.records = 0
        self.requests = 0
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                x = np.asarray(body["instances"], dtype=np.float64)
                p = model.predict_proba(x)
                if labels_only:
                    p = np.eye(p.shape[1])[p.argmax(axis=1)]
                with lock:
                    owner.records += len(x)
                    owner.requests += 1
                data = json.dumps({"probs": p.tolist()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/predict"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def split():
    """Members / non-members of an overfit forest (noisy labels: it memorises its members)."""
    x, y = make_classification(
        n_samples=360, n_features=N_FEATURES, n_informative=4, flip_y=0.2, random_state=3
    )
    cols = [f"f{i}" for i in range(N_FEATURES)]
    df = pd.DataFrame(x.astype(np.float32), columns=cols)
    df["y"] = np.where(y == 1, "yes", "no")
    members, nonmembers = df.iloc[:180].reset_index(drop=True), df.iloc[180:].reset_index(drop=True)
    forest = RandomForestClassifier(n_estimators=40, random_state=0)
    forest.fit(members[cols].to_numpy(np.float64), (members["y"] == "yes").astype(int))
    return members, nonmembers, forest


def _map_file(tmp_path, *, access: str | None = None):
    path = tmp_path / "api.toml"
    extra = f'access = "{access}"\n' if access else ""
    path.write_text(
        '[request]\ninputs = "instances"\n\n[response]\nprobs = "probs"\n\n'
        f'[model]\ninput_shape = [{N_FEATURES}]\nclasses = ["no", "yes"]\n{extra}'
    )
    return path


@pytest.fixture
def server(split):
    s = ModelServer(split[2])
    yield s
    s.close()


def test_python_audit_of_an_endpoint_on_the_users_split(split, server, tmp_path):
    members, nonmembers, forest = split
    model = privguard.endpoint(server.url, mapping=_map_file(tmp_path))
    with model:
        report = privguard.audit(
            model,
            members=members,
            nonmembers=nonmembers,
            label="y",
            attacks=ATTACKS,
            settings=SETTINGS,
        )
    by_name = {r.name: r for r in report.attacks}
    assert set(by_name) == set(ATTACKS), report.summary
    assert by_name["label-only-boundary"].queries > 0
    auc = {n: by_name[n].metrics["auc"] for n in ("loss-threshold", "lira-offline", "rmia")}
    # the forest memorises noisy labels: far above chance through HTTP alone (measured: loss
    # 0.78, RMIA 0.76, LiRA-offline 0.62 on 180 members / 90 evaluated non-members, where one
    # standard error of an AUC is about 0.037). LiRA's proxy (an MLP) is a poor match for a
    # forest, so it is the weakest: the report's "lower bound" note is about exactly that.
    assert auc["loss-threshold"] > 0.7 and auc["rmia"] > 0.7, auc
    assert auc["lira-offline"] > 0.58, auc
    # the reference models are the attacker's proxy, and the report says so
    assert report.target["reference_recipe"]["kind"] == "proxy"
    assert "lower bound" in report.target["reference_recipe"]["note"]
    # every record the audit paid for is one the server answered
    e = report.target["endpoint"]
    assert e["records_answered"] == server.records > 0
    assert e["http_requests"] == server.requests
    assert e["access"] == "probs"
    # the attacks' queries, plus one up-front pass over members and evaluated non-members
    # (target.metrics) and one over the non-members (the utility guard), as docs/byom.md says
    n_mem, n_non = report.data["split"]["members"], report.data["split"]["nonmembers"]
    spent = sum(a.queries for a in report.attacks)
    assert e["records_answered"] == spent + n_mem + 2 * n_non


def test_label_only_endpoint_caps_the_attacks(split, tmp_path):
    members, nonmembers, forest = split
    s = ModelServer(forest, labels_only=True)
    try:
        model = privguard.endpoint(s.url, mapping=_map_file(tmp_path, access="label"))
        with pytest.raises(AccessError, match="label"):
            privguard.endpoint(s.url, mapping=_map_file(tmp_path, access="label"), access="probs")
        with model:
            report = privguard.audit(
                model,
                members=members.iloc[:60],
                nonmembers=nonmembers.iloc[:60],
                label="y",
                attacks=["membership"],
                settings=SETTINGS,
            )
    finally:
        s.close()
    assert report.plan["access"] == "label"
    ran = {r.name for r in report.attacks}
    assert ran and all(n.startswith("label-only") for n in ran), ran
    assert report.target["endpoint"]["records_answered"] == s.records


def run(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_audit_endpoint_without_a_model_directory(split, server, tmp_path, capsys):
    members, nonmembers, _ = split
    members.to_csv(tmp_path / "train.csv", index=False)
    nonmembers.to_csv(tmp_path / "holdout.csv", index=False)
    out = tmp_path / "report"
    args = [
        "audit",
        "--endpoint",
        server.url,
        "--endpoint-map",
        str(_map_file(tmp_path)),
        "--members",
        str(tmp_path / "train.csv"),
        "--nonmembers",
        str(tmp_path / "holdout.csv"),
        "--label",
        "y",
        "--attacks",
        "loss-threshold,rmia",
        "--set",
        "rmia.n_reference=2",
        "--out",
        str(out),
    ]
    code, stdout, stderr = run(capsys, args)
    assert code == 0, stdout + stderr
    rep = json.loads((out / "report.json").read_text())
    auc = {a["name"]: a["metrics"]["auc"] for a in rep["attacks"]}
    assert auc["loss-threshold"] > 0.7 and auc["rmia"] > 0.7, auc
    assert rep["target"]["endpoint"]["records_answered"] == server.records
    assert f"{server.records} records answered" in " ".join(stdout.split())


def test_cli_bad_input_is_one_line_exit_2(split, server, tmp_path, capsys):
    members, nonmembers, _ = split
    members.to_csv(tmp_path / "train.csv", index=False)
    nonmembers.to_csv(tmp_path / "holdout.csv", index=False)
    # members that overlap the non-members
    pd.concat([nonmembers.iloc[:5], members]).to_csv(tmp_path / "overlap.csv", index=False)
    base = ["audit", "--endpoint-map", str(_map_file(tmp_path)), "--label", "y"]
    cases = {
        "down": ["--endpoint", "http://127.0.0.1:9/predict", "--members", "train.csv"],
        "overlap": ["--endpoint", server.url, "--members", "overlap.csv"],
        "model and members": ["--endpoint", server.url, "--members", "train.csv", "--model", "x"],
    }
    for what, extra in cases.items():
        extra = [str(tmp_path / a) if a.endswith(".csv") else a for a in extra]
        args = [*base, *extra, "--nonmembers", str(tmp_path / "holdout.csv")]
        args += ["--out", str(tmp_path / f"out-{what.replace(' ', '-')}")]
        code, stdout, stderr = run(capsys, args)
        assert code == 2, (what, stdout, stderr)
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("privguard: error:"), (what, stderr)
    assert server.records == 0  # refused before any prediction was asked for


def test_python_bad_input(split, server, tmp_path):
    members, nonmembers, _ = split
    # a mapped API without a metadata URL is first reached by the audit's first query
    down = privguard.endpoint("http://127.0.0.1:9/p", mapping=_map_file(tmp_path), retries=0)
    with down, pytest.raises(PrivguardError, match="cannot reach"):
        privguard.audit(down, members=members, nonmembers=nonmembers, label="y")
    model = privguard.endpoint(server.url, mapping=_map_file(tmp_path))
    with model, pytest.raises(DataError, match="both"):
        privguard.audit(model, members=members, nonmembers=members.iloc[:20], label="y")
    assert server.records == 0
