"""Stage start-up: seconds from `python -m stages.<stage>` to its error on a bad param.

    python benchmarks/startup.py [--baseline REV] [--repeat 3]

Each checkout (this one, and REV's if given, for a ratio in the same run) is copied to a temporary
folder whose params.yaml has `batch_size: 0` in its last experiment, the last thing a full check of
params reaches, so the time is the stage's start-up plus checking everything. Every stage is started
there in turn (interleaved rounds, best of each), and `python -X importtime` tells whether it
imported TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine  # noqa: E402

STAGES = {  # stage -> arguments; the first four need no model
    "generate_captcha": [],
    "fetch": ["pets"],
    "prepare": ["pets"],
    "validate": ["captcha"],
    "weights": ["captcha"],
    "train": ["captcha"],
    "report": [],
}


def checkout(rev: str | None, into: Path) -> Path:
    """The tracked files of ``rev`` (None: the working tree) in ``into``, with one bad experiment param."""
    into.mkdir(parents=True)
    if rev is None:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.split("\0")
        for name in filter(None, files):
            if (ROOT / name).is_file():
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                (into / name).write_bytes((ROOT / name).read_bytes())
    else:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    params = yaml.safe_load((into / "params.yaml").read_text())
    last = list(params["experiments"])[-1]
    params["experiments"][last]["batch_size"] = 0
    (into / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return into


def start(tree: Path, stage: str) -> tuple[float, bool, str]:
    """(seconds to exit, TensorFlow imported, last line of stderr) of one stage start."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", f"stages.{stage}", *STAGES[stage]],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - began
    assert result.returncode != 0, f"{stage} in {tree} accepted batch_size: 0"
    lines = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    imported_tf = any(line.split("|")[-1].strip() == "tensorflow" for line in result.stderr.splitlines()
                      if line.startswith("import time:"))
    return seconds, imported_tf, (lines[-1] if lines else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="a git revision to compare with (e.g. the commit before a change)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this": checkout(None, Path(tmp) / "this")}
        if args.baseline:
            trees[args.baseline] = checkout(args.baseline, Path(tmp) / "baseline")
        best: dict[tuple[str, str], tuple[float, bool, str]] = {}
        for _ in range(args.repeat):
            for stage in STAGES:
                for label, tree in trees.items():
                    if stage == "weights" and not (tree / "stages" / "weights.py").exists():
                        continue
                    run = start(tree, stage)
                    if (label, stage) not in best or run[0] < best[label, stage][0]:
                        best[label, stage] = run
    print(machine())
    labels = list(trees)
    print("| stage | " + " | ".join(f"{label}: s (TensorFlow)" for label in labels)
          + (" | ratio |" if len(labels) > 1 else " |"))
    print("|---" * (len(labels) + 1 + (len(labels) > 1)) + "|")
    for stage in STAGES:
        cells = [f"{best[label, stage][0]:.1f} ({'yes' if best[label, stage][1] else 'no'})"
                 if (label, stage) in best else "-" for label in labels]
        ratio = ""
        if len(labels) > 1 and all((label, stage) in best for label in labels):
            ratio = f" | {best[labels[1], stage][0] / best[labels[0], stage][0]:.1f}x"
        print(f"| {stage} | " + " | ".join(cells) + ratio + " |")
    for label in labels:
        print(f"{label}, generate_captcha says: {best[label, 'generate_captcha'][2]}")


if __name__ == "__main__":
    main()
