"""Images per second from an S3 server: our pets source at 10 workers (openimages' default) and at 32 (ours).

Run from the repository root: ``.venv/bin/python benchmarks/download.py --count 300``.
A moto S3 server runs in its own process on loopback with ``--count`` noise JPEGs of thumbnail size
(about 25-90 KB). Each round every method downloads all of them into a fresh folder; methods take turns
for ``--repeat`` rounds and each keeps its best, so load from other processes skews them alike and least.
``--stock`` adds openimages' own downloader (10 threads, a thread pool per file) for comparison.
Loopback has no round-trip time, which is what many workers hide; ``--latency-ms`` adds a sleep before
every S3 request (botocore's before-send hook) as a stand-in for the distance to a real S3 region.
Timed: the image phase of ``fetch`` (download, check, hash, rename), as ``fetch`` reports it; the label
CSVs are already in place. On a small machine the server competes for the same cores: see the load line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.common` when run as a script

import boto3  # noqa: E402
import common  # noqa: E402  (benchmarks/common.py)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from transferbench.data.sources import openimages  # noqa: E402

BUCKET = "open-images-dataset"


def machine() -> str:
    return common.machine(f"boto3 {version('boto3')}", f"moto {version('moto')} server in its own process")


def start_server() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in a child process (not a thread: it would share this process's GIL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.1):
            return server, f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    server.kill()
    raise SystemExit(f"moto server did not start on port {port}")


def upload(endpoint: str, count: int) -> tuple[list[str], int]:
    """``count`` noise JPEGs under train/; their IDs and total bytes."""
    admin = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="bench", aws_secret_access_key="bench")
    admin.create_bucket(Bucket=BUCKET)
    rng, ids, total = np.random.default_rng(0), [], 0
    for n in range(count):
        side = int(rng.integers(200, 380))
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out, "JPEG", quality=75)
        ids.append(f"{n:016x}")
        total += out.tell()
        admin.put_object(Bucket=BUCKET, Key=f"train/{ids[-1]}.jpg", Body=out.getvalue(), ACL="public-read")
    return ids, total


def write_csvs(folder: Path, ids: list[str]) -> None:
    """Label CSVs in the real format: every image in train, one class each."""
    mids = list(openimages.MIDS.values())
    folder.mkdir(parents=True)
    for split in openimages.SPLITS:
        rows = [(i, "verification", mids[n % 3], 1) for n, i in enumerate(ids)] if split == "train" else []
        pd.DataFrame(rows, columns=["ImageID", "Source", "LabelName", "Confidence"]).to_csv(
            folder / openimages.csv_name(split), index=False)


def add_latency(events, seconds: float) -> None:
    """Every S3 request of clients using ``events`` waits ``seconds`` first (the GIL is free meanwhile,
    as on a network)."""
    if seconds:
        events.register("before-send.s3", lambda **_: time.sleep(seconds))


def ours(endpoint: str, csv_dir: Path, workers: int) -> float:
    values = {"source": {"csv_base": "http://127.0.0.1:9/", "s3_endpoint": endpoint, "bucket": BUCKET,
                         "limit": 0, "download_workers": workers, "retries": 3}}
    with tempfile.TemporaryDirectory(prefix="bench-pets-") as tmp:
        raw_dir = Path(tmp)
        for csv in csv_dir.iterdir():
            (raw_dir / "csv").mkdir(exist_ok=True)
            (raw_dir / "csv" / csv.name).write_bytes(csv.read_bytes())
        summary = openimages.fetch(values, raw_dir, seed=0)
    if summary["counts"]["train"]["cat"]["failed"]:
        raise SystemExit(f"downloads failed: {summary['counts']}")
    return summary["seconds"]


def stock(endpoint: str, ids: list[str]) -> float:
    """openimages' _download_images_by_id as it is: its own client, 10 threads; AWS_ENDPOINT_URL_S3 points it here."""
    openimages._download_single_image()  # import it without its logging side effects
    download = sys.modules["openimages.download"]
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    try:
        with tempfile.TemporaryDirectory(prefix="bench-stock-") as tmp:
            started = time.perf_counter()
            download._download_images_by_id(ids, "train", tmp)
            return time.perf_counter() - started
    finally:
        del os.environ["AWS_ENDPOINT_URL_S3"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(run, server_pid: int) -> tuple[float, float, float]:
    """(seconds ``run`` reports, CPU seconds of this process, CPU seconds of the server) for one call."""
    client, server = time.process_time(), cpu_seconds(server_pid)
    seconds = run()
    return seconds, time.process_time() - client, cpu_seconds(server_pid) - server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=300, help="images per round (default 300)")
    parser.add_argument("--workers", type=int, nargs="+", default=[10, 32], help="worker counts (default 10 32)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each method keeps its best (default 3)")
    parser.add_argument("--stock", action="store_true", help="also time openimages' own downloader")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="simulated round trip per S3 request (default 0)")
    args = parser.parse_args()
    if args.count < 3 or args.repeat < 1:
        parser.error(f"--count must be at least 3 and --repeat at least 1, got {args.count} and {args.repeat}")

    make_client, latency = openimages.s3_client, args.latency_ms / 1000

    def slow_client(*a, **kw):
        client = make_client(*a, **kw)
        add_latency(client.meta.events, latency)
        return client

    openimages.s3_client = slow_client
    boto3.setup_default_session()  # openimages' own client comes from the default session
    add_latency(boto3.DEFAULT_SESSION.events, latency)
    server, endpoint = start_server()
    try:
        ids, total = upload(endpoint, args.count)
        with tempfile.TemporaryDirectory(prefix="bench-csv-") as tmp:
            csv_dir = Path(tmp) / "csv"
            write_csvs(csv_dir, ids)
            methods = {f"our fetch, {w} workers": (lambda w=w: ours(endpoint, csv_dir, w)) for w in args.workers}
            if args.stock:
                methods["openimages _download_images_by_id, 10 threads"] = lambda: stock(endpoint, ids)
            load_before = os.getloadavg()[0]
            rounds = [{name: measured(run, server.pid) for name, run in methods.items()} for _ in range(args.repeat)]
    finally:
        server.terminate()
        server.wait()
    best = {name: min((r[name] for r in rounds), key=lambda m: m[0]) for name in methods}

    print(machine())
    print(f"{args.count} JPEGs, {total / 1e6:.1f} MB ({total / args.count / 1e3:.0f} KB average), per method; best of "
          f"{args.repeat} interleaved rounds; {args.latency_ms:g} ms added per S3 request; "
          f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    baseline = best[next(iter(methods))][0]
    print("\n| method | best s | images/s | MB/s | vs first | CPU ms/image client | CPU ms/image server "
          "| s of every round |\n|---|---:|---:|---:|---:|---:|---:|---|")
    for name, (seconds, client, server_cpu) in best.items():
        spread = " ".join(f"{r[name][0]:.2f}" for r in rounds)
        print(f"| {name} | {seconds:.2f} | {args.count / seconds:.0f} | {total / 1e6 / seconds:.1f} | "
              f"{baseline / seconds:.2f}x | {1000 * client / args.count:.1f} | {1000 * server_cpu / args.count:.1f} "
              f"| {spread} |")


if __name__ == "__main__":
    main()
