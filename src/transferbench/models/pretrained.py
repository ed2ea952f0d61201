"""Stage `weights@<experiment>`: put the experiment's initial weights into models/<experiment>/init/.

An arm (transferbench.config.weights: params value -> arms, normalised once) becomes a file here,
in :func:`arm_file`, the one place that decides what a model starts from.

`imagenet` fetches Keras' no-top file once into Keras' own cache (``$KERAS_HOME/models``) with
``keras.utils.get_file``, which checks its md5 against the hash Keras publishes, and copies it here so
DVC tracks exactly what training started from. get_file writes straight to its final name, so it
downloads into a folder of this process's own (``.partial-<pid>``) and the checked file is renamed into
the cache: a killed download, or two weights stages fetching the same file at once, never leave or read
a half-written file under the name Keras loads. A path is checked by loading it into the model. `none`
records random initialisation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from transferbench.config.weights import IMAGENET, KERAS_MODEL, Arm
from transferbench.core import backend
from transferbench.core.errors import ConfigError, shortened
from transferbench.core.files import atomic_path, file_digest, write_json
from transferbench.core.redact import RedactingStream

# Mirrors (an air-gapped cluster, the tests' loopback server) replace Keras' public address.
WEIGHTS_URL_ENV = "TRANSFERBENCH_KERAS_WEIGHTS_URL"
DOWNLOAD_TIMEOUT_S = 20
# A download in progress, in Keras' cache: .partial-<pid>-<random>/<file>
PARTIAL_PREFIX = ".partial-"


def keras_cache_dir() -> Path:
    """Where ``keras.applications`` looks for weights: ``$KERAS_HOME/models`` (default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Sockets opened in the block give up after ``seconds`` without data."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def fetch_imagenet(model_name: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Keras' no-top ImageNet weights for ``model_name``: from Keras' cache if its md5 matches, else downloaded.

    ``timeout`` bounds each connect and each wait for data, in seconds.
    """
    backend.select()  # Keras' first import in this stage: a backend that cannot run is one line, not Keras' error
    from keras.utils import get_file

    from transferbench.models.catalog import KERAS_WEIGHTS_BASE, MODELS

    spec = MODELS.get(model_name).imagenet
    if spec is None:
        raise ConfigError(f"model {model_name!r} has no ImageNet weights; accepted: weights=none or a file")
    cache = keras_cache_dir()
    target = cache / spec.filename
    url = (os.environ.get(WEIGHTS_URL_ENV) or KERAS_WEIGHTS_BASE).rstrip("/") + "/" + spec.path
    if target.is_file() and file_digest(target, "md5") == spec.md5:
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_downloads(cache)
        workspace = tempfile.TemporaryDirectory(prefix=f"{PARTIAL_PREFIX}{os.getpid()}-", dir=cache)
    except OSError as err:
        raise ConfigError(f"cannot write to Keras' cache {cache} ({err}); "
                          "set KERAS_HOME to a writable folder") from None
    with workspace as folder:
        try:
            # get_file takes no timeout: the sockets' default bounds it, so a dead mirror fails in seconds.
            # It prints the address it downloads from: a mirror's credentials are masked there too.
            with _socket_timeout(timeout), contextlib.redirect_stdout(RedactingStream(sys.stdout)):
                got = Path(get_file(spec.filename, url, file_hash=spec.md5, hash_algorithm="md5",
                                    cache_subdir="", cache_dir=folder))
        except ValueError as err:  # downloaded, but not the bytes Keras published
            partial = Path(folder) / spec.filename
            md5 = file_digest(partial, "md5") if partial.is_file() else "unknown"
            raise ConfigError(f"downloaded {url} but its md5 is {md5}, not Keras' {spec.md5}; "
                              "the mirror or the download is corrupt") from err
        except Exception as err:  # noqa: BLE001 - get_file turns URL errors into a bare Exception
            raise ConfigError(
                f"cannot fetch ImageNet weights for {model_name}: tried {url} ({err}). Offline? Put "
                f"{spec.filename} (md5 {spec.md5}) at {target}, set {WEIGHTS_URL_ENV} to a mirror holding "
                f"{spec.path}, or train from random initialisation with `dvc exp run -S weights=none`"
            ) from err
        os.replace(got, target)
    return target


def _remove_orphaned_downloads(cache: Path) -> None:
    """Delete the download folders of processes that no longer run (killed mid-download)."""
    for folder in cache.glob(f"{PARTIAL_PREFIX}*"):
        pid = folder.name.removeprefix(PARTIAL_PREFIX).split("-")[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def arm_file(arm: Arm, model_name: str) -> Path | None:
    """The weights file an arm starts ``model_name`` from: None for random initialisation, Keras'
    ImageNet file (fetched once, md5-checked) for imagenet, else the arm's own file."""
    if arm.source == IMAGENET:
        return fetch_imagenet(model_name)
    return arm.file


def prepare_init(experiment, out_dir: Path) -> dict:
    """Write ``out_dir/source.json`` (+ ``weights.h5`` unless random init); return the source record.

    A trained ``.keras`` model gives its base: saved as ``weights.weights.h5``, the file training loads.
    """
    from transferbench.models.backbones import build_core, load_core_weights

    model, arm = experiment.settings.model, experiment.arm
    record = {"model": model, "weights": arm.source}
    weights_file = arm_file(arm, model)
    if weights_file is not None and weights_file.name.endswith(".keras"):
        out_dir.mkdir(parents=True, exist_ok=True)
        base = out_dir / "weights.weights.h5"
        save_base(weights_file, base)
        core = build_core(model, experiment.image_shape)
        load_core_weights(core, base, model)  # a model of another architecture or size fails here
        record.update(file=base.name, md5=file_digest(base, "md5"), from_model=file_digest(weights_file, "md5"))
        write_json(out_dir / "source.json", record)
        return record
    if arm.file is not None:
        # Load it now, so a file for another model fails here and not after data loading.
        core = build_core(model, experiment.image_shape)
        load_core_weights(core, arm.file, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights_file is not None:
        # Keras 3 only loads legacy (Keras 2) weights from a file whose name ends in .h5
        # and new-format ones from .weights.h5; keep the user's suffix.
        suffix = ".weights.h5" if weights_file.name.endswith(".weights.h5") else ".h5"
        with atomic_path(out_dir / f"weights{suffix}") as tmp:
            shutil.copyfile(weights_file, tmp)
        record.update(file=f"weights{suffix}", md5=file_digest(out_dir / f"weights{suffix}", "md5"))
    write_json(out_dir / "source.json", record)
    return record


def save_base(model_file: Path, out: Path) -> None:
    """The base (the core) of a trained model, as a weights file for ``weights:``; written whole or not at all.

    A file Keras cannot load (cut short, damaged, refused by safe mode) or a model without one base is a
    ConfigError naming the file and what is accepted. Safe mode stays on: a Lambda layer would run its code.
    """
    backend.select()  # as in fetch_imagenet: the backend checked before Keras loads
    from transferbench.models.backbones import core_of, load_model

    try:
        trained = load_model(model_file, compile=False)
    except Exception as err:  # noqa: BLE001 - Keras raises ValueError, TypeError, KeyError, zipfile's and h5py's
        raise ConfigError(f"weights file {str(model_file)!r} cannot be loaded as a Keras model "
                          f"({_keras_reason(err)}); accepted: {KERAS_MODEL}") from None
    try:
        core = core_of(trained)
    except ValueError as err:
        raise ConfigError(f"weights file {str(model_file)!r} holds no model of this project ({err}); "
                          f"accepted: {KERAS_MODEL}") from None
    # Keras names the format by the suffix, so the temporary file keeps it: a folder of its own beside ``out``.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        core.save_weights(str(Path(tmp) / out.name))
        os.replace(Path(tmp) / out.name, out)


def _keras_reason(err: Exception) -> str:
    """Why Keras would not load a model, in a few words: its first line, shortened."""
    text = " ".join(str(err).split())
    if "Lambda" in text or "safe_mode" in text:
        return "it holds a Lambda layer, Python code that Keras' safe mode refuses to run"
    return shortened(f"{type(err).__name__}: {text}")


def init_weights_file(init_dir: Path) -> Path | None:
    """The weights file the weights stage left in ``init_dir``, or None for random initialisation."""
    from transferbench.core.files import read_json

    record = read_json(init_dir / "source.json")
    return init_dir / record["file"] if "file" in record else None
