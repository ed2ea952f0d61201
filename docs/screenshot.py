"""Screenshot of the MLflow UI comparing a pretrained and a random-initialisation run: docs/mlflow-ui.png.

Starts `mlflow server` on loopback (127.0.0.2) over a new store in a temporary folder, logs two runs
of one experiment through transferbench.tracking.mlflow_runs (pets, Xception, `imagenet` and `none`, 30 epochs), and has
headless Chromium (Debian's `chromium`) capture MLflow's run-comparison page
(``/#/compare-runs?runs=[...]&experiments=[...]``). Runs in about 20 s; needs no network.

The per-epoch numbers are made up in the shape reference study 000 describes (pretrained settles after
about 8 epochs, random after about 17); they are not measurements. Each run carries the tag
``synthetic=true`` so the picture cannot be mistaken for a result.

    python docs/screenshot.py [--out docs/mlflow-ui.png] [--chromium chromium]
    python docs/screenshot.py --repo . --out docs/mlflow-runs.png    # a real run's store instead
    python docs/screenshot.py --repo . --parent --out docs/mlflow-parent.png    # its newest parent run

With ``--repo``, the server reads that repository's mlflow.db (and mlartifacts/) and the picture is
the runs table of its first experiment, as `mlflow ui` opens it; ``--run`` its newest run's page, ``--parent``
its newest parent run's (the answer: differences, verdicts, the report as artifacts).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EPOCHS = 30
# A loopback address that is not 127.0.0.1: MLflow's UI opens its assistant panel over half the page on
# a first visit to localhost / 127.0.0.1, and nowhere else.
HOST = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(store: Path, repo: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` over a new store in ``store``, or over ``repo``'s own (its mlflow.db, mlartifacts/)."""
    backend = f"sqlite:///{(repo or store) / 'mlflow.db'}"
    artifacts = repo / "mlartifacts" if repo else store / "artifacts"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(store / "server.log", "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "server", "--host", HOST, "--port", str(port),
             # Not a default host or origin of MLflow's security middleware: name it.
             "--allowed-hosts", f"{HOST}:{port},{HOST}", "--cors-allowed-origins", f"http://{HOST}:{port}",
             "--workers", "1", "--backend-store-uri", backend, "--artifacts-destination", str(artifacts)],
            cwd=store, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop(proc)
    raise SystemExit(f"mlflow server did not start:\n{(store / 'server.log').read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def curve(epoch: int, start: float, end: float, tau: float, wobble: float) -> float:
    """A saturating curve with a small deterministic wobble (illustration, not data)."""
    return start + (end - start) * (1 - math.exp(-epoch / tau)) + wobble * math.sin(epoch * 1.7)


def synthetic_epoch(weights: str, epoch: int) -> dict[str, float]:
    if weights == "imagenet":
        val = curve(epoch, 0.86, 0.962, 2.5, 0.004)
        train = curve(epoch, 0.88, 0.995, 4.0, 0.001)
        val_loss = 0.10 + 0.25 * math.exp(-epoch / 2.5) + 0.004 * max(0, epoch - 10)  # overfits late
    else:
        val = curve(epoch, 0.45, 0.937, 6.0, 0.008)
        train = curve(epoch, 0.50, 0.99, 7.0, 0.002)
        val_loss = 0.22 + 0.80 * math.exp(-epoch / 6.0)
    return {"accuracy": train, "val_accuracy": val, "loss": 1.3 * (1 - train) + 0.02,
            "val_loss": val_loss, "learning_rate": 0.001 if epoch < 20 else 0.0005}


def log_runs() -> tuple[str, list[str]]:
    """Two runs of the pets experiment, logged as training would: returns (experiment id, run ids)."""
    from transferbench.config.weights import Arm
    from transferbench.study.experiments import resolve
    from transferbench.study.params import check_params
    from transferbench.tracking import mlflow_runs as tracking

    with open(ROOT / "params.yaml", encoding="utf-8") as f:
        params = yaml.safe_load(f)
    settings = {k: v for k, v in params["experiments"]["captcha"].items() if k != "weights"}
    params["experiments"] = {"pets": {**settings, "dataset": "pets", "model": "xception", "epochs": EPOCHS}}
    params["weights"] = "imagenet"
    base = resolve(check_params(params), "pets")
    run_ids = []
    for weights, test in (("imagenet", (0.9596, 0.1184)), ("none", (0.9366, 0.2408))):
        experiment = dataclasses.replace(base, arm=Arm(weights))
        run_id = tracking.start_run(experiment)
        tracking._client().set_tag(run_id, "synthetic", "true")
        for epoch in range(1, EPOCHS + 1):
            tracking.log_metrics(run_id, synthetic_epoch(weights, epoch), step=epoch)
        tracking.log_metrics(run_id, {"test.accuracy": test[0], "test.loss": test[1]})
        tracking.end_run(run_id)
        run_ids.append(run_id)
    experiment_id = tracking._client().get_experiment_by_name("pets").experiment_id
    return experiment_id, run_ids


def screenshot(url: str, out: Path, chromium: str, profile: Path) -> None:
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=15000",
         "--hide-scrollbars", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=180)


def shrink(path: Path) -> None:
    """Re-encode as a 256-colour PNG: a UI screenshot loses nothing visible and shrinks a lot."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow-ui.png")
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--repo", type=Path, help="a repository whose real runs (mlflow.db) to show")
    parser.add_argument("--run", action="store_true",
                        help="with --repo: the newest run's own page (description, tags, params, metrics)")
    parser.add_argument("--parent", action="store_true",
                        help="with --repo: the newest parent run's page (the answer the report logged there)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        repo = args.repo.resolve() if args.repo else None
        proc, url = start_server(store, repo)
        try:
            os.environ["MLFLOW_TRACKING_URI"] = url
            if repo:
                from mlflow import MlflowClient

                experiments = MlflowClient(url).search_experiments()
                if not experiments:
                    raise SystemExit(f"{repo / 'mlflow.db'} has no experiment: run the pipeline first")
                # MLflow 3.17 opens every experiment as GenAI unless the page is asked for model training.
                page = f"{url}/#/experiments/{experiments[0].experiment_id}/runs?workflowType=machine_learning"
                if args.run or args.parent:
                    kind = "tags.role = 'parent'" if args.parent else ""
                    newest = MlflowClient(url).search_runs([experiments[0].experiment_id], kind, max_results=1,
                                                           order_by=["attributes.start_time DESC"])
                    if not newest:
                        raise SystemExit(f"{repo / 'mlflow.db'} has no {'parent ' if args.parent else ''}run: "
                                         "run the pipeline first")
                    page = (f"{url}/#/experiments/{experiments[0].experiment_id}/runs/{newest[0].info.run_id}"
                            "?workflowType=machine_learning")
            else:
                experiment_id, run_ids = log_runs()
                query = urllib.parse.urlencode({"runs": json.dumps(run_ids),
                                                "experiments": json.dumps([experiment_id])},
                                               quote_via=urllib.parse.quote)
                page = f"{url}/#/compare-runs?{query}"
            (store / "profile").mkdir()
            screenshot(page, args.out, args.chromium, store / "profile")
        finally:
            stop(proc)
    shrink(args.out)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB): {page}")


if __name__ == "__main__":
    main()
