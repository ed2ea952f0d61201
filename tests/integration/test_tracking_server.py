"""Every machine logs to one tracking server (MLFLOW_TRACKING_URI=http://...): writes go straight to it, with the
login from the environment, and the first trainings of two machines share the dataset's experiment.

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


def test_the_dataset_experiment_another_machine_made_meanwhile_is_joined(mlflow_db, monkeypatch):
    """Two machines start their first training at once: both look, find no experiment, and create it; the
    server refuses the second create (RESOURCE_ALREADY_EXISTS), whose training then logs into the first's."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{mlflow_db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    made = MlflowClient(uri).create_experiment("captcha")  # the other machine's, between our look and our create

    class LookedTooEarly(MlflowClient):
        looks = 0

        def get_experiment_by_name(self, name):
            self.looks += 1
            return None if self.looks == 1 else super().get_experiment_by_name(name)

    client = LookedTooEarly(uri)
    assert mlflow_runs.experiment_id(client, "captcha") == made
    assert client.looks == 2
    assert [e.name for e in MlflowClient(uri).search_experiments()] == ["captcha", "Default"]
