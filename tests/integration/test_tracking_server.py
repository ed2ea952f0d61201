"""Writes to a tracking server (MLFLOW_TRACKING_URI=http://...) go straight to it, with the login from the environment.

A SQLite store is opened (its tables made) under our lock before each write; a server made its own tables, so
that first request would only cost every write a round trip and a login check (README: Past one machine).
"""

from __future__ import annotations

import base64
import json

from tests.loopback import LoopbackServer
from transferbench.tracking import mlflow_runs


def test_a_write_to_a_server_is_one_request_carrying_the_login(monkeypatch):
    def set_tag(request):
        return 200, {"Content-Type": "application/json"}, b"{}"

    with LoopbackServer(post_routes={"/api/2.0/mlflow/runs/set-tag": set_tag}) as server:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.base)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "study")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a long password")
        mlflow_runs.describe("0123456789abcdef", "test accuracy 0.93")

    assert [(r.method, r.path) for r in server.log] == [("POST", "/api/2.0/mlflow/runs/set-tag")]
    (request,) = server.log
    assert json.loads(request.body) == {"run_id": "0123456789abcdef", "run_uuid": "0123456789abcdef",
                                        "key": "mlflow.note.content", "value": "test accuracy 0.93"}
    login = base64.b64encode(b"study:a long password").decode()
    assert request.headers["Authorization"] == f"Basic {login}"
