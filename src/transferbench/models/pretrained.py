"""Stage `weights@<experiment>`: put the experiment's initial weights into models/<experiment>/init/.

An arm (transferbench.config.weights: params value -> arms, normalised once) becomes a file here,
in :func:`arm_file`, the one place that decides what a model starts from.

`imagenet` fetches Keras' no-top file once into Keras' own cache (``$KERAS_HOME/models``), checks
its md5 against the hash Keras publishes, and copies it here so DVC tracks exactly what training
started from. A path is checked by loading it into the model. `none` records random initialisation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from transferbench.config.weights import IMAGENET, Arm
from transferbench.core.errors import ConfigError
from transferbench.core.files import atomic_path, write_json

# Mirrors (an air-gapped cluster, the tests' loopback server) replace Keras' public address.
WEIGHTS_URL_ENV = "TRANSFERBENCH_KERAS_WEIGHTS_URL"
DOWNLOAD_TIMEOUT_S = 20


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def keras_cache_dir() -> Path:
    """Where ``keras.applications`` looks for weights: ``$KERAS_HOME/models`` (default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def fetch_imagenet(model_name: str) -> Path:
    """Keras' no-top ImageNet weights for ``model_name``: from Keras' cache, else downloaded; md5 checked."""
    from transferbench.models.backbones import KERAS_WEIGHTS_BASE, MODELS

    spec = MODELS.get(model_name).imagenet
    if spec is None:
        raise ConfigError(f"model {model_name!r} has no ImageNet weights; accepted: weights=none or a file")
    target = keras_cache_dir() / spec.filename
    if target.is_file():
        if md5sum(target) == spec.md5:
            return target
        print(f"{target} has the wrong md5 (expected {spec.md5}); downloading it again", file=sys.stderr)
    url = (os.environ.get(WEIGHTS_URL_ENV) or KERAS_WEIGHTS_BASE).rstrip("/") + "/" + spec.path
    print(f"downloading {url}", file=sys.stderr)
    try:
        with atomic_path(target) as tmp:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
            got = md5sum(tmp)
            if got != spec.md5:
                raise ConfigError(f"downloaded {url} but its md5 is {got}, not Keras' {spec.md5}; "
                                  "the mirror or the download is corrupt")
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as err:
        raise ConfigError(
            f"cannot fetch ImageNet weights for {model_name}: tried {url} ({err}). Offline? Put "
            f"{spec.filename} (md5 {spec.md5}) at {target}, set {WEIGHTS_URL_ENV} to a mirror holding "
            f"{spec.path}, or train from random initialisation with `dvc exp run -S weights=none`"
        ) from err
    return target


def arm_file(arm: Arm, model_name: str) -> Path | None:
    """The weights file an arm starts ``model_name`` from: None for random initialisation, Keras'
    ImageNet file (fetched once, md5-checked) for imagenet, else the arm's own file."""
    if arm.source == IMAGENET:
        return fetch_imagenet(model_name)
    return arm.file


def prepare_init(experiment, out_dir: Path) -> dict:
    """Write ``out_dir/source.json`` (+ ``weights.h5`` unless random init); return the source record."""
    from transferbench.models.backbones import build_core, load_core_weights

    model, arm = experiment.settings.model, experiment.arm
    record = {"model": model, "weights": arm.source}
    weights_file = arm_file(arm, model)
    if arm.file is not None:
        # Load it now, so a file for another model fails here and not after data loading.
        core = build_core(model, experiment.image_shape, experiment.settings.pooling)
        load_core_weights(core, arm.file, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights_file is not None:
        # Keras 3 only loads legacy (Keras 2) weights from a file whose name ends in .h5
        # and new-format ones from .weights.h5; keep the user's suffix.
        suffix = ".weights.h5" if weights_file.name.endswith(".weights.h5") else ".h5"
        with atomic_path(out_dir / f"weights{suffix}") as tmp:
            shutil.copyfile(weights_file, tmp)
        record.update(file=f"weights{suffix}", md5=md5sum(out_dir / f"weights{suffix}"))
    write_json(out_dir / "source.json", record)
    return record


def init_weights_file(init_dir: Path) -> Path | None:
    """The weights file the weights stage left in ``init_dir``, or None for random initialisation."""
    from transferbench.core.files import read_json

    record = read_json(init_dir / "source.json")
    return init_dir / record["file"] if "file" in record else None
