"""The weights stage: Keras' ImageNet files through a loopback server, md5 checks, offline failure."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.loopback import LoopbackServer
from transferbench import cli
from transferbench.core import paths
from transferbench.core.errors import ConfigError
from transferbench.models import backbones as models
from transferbench.models import catalog
from transferbench.models import pretrained as weights
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params
from transferbench.training.fit import build_model


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


@pytest.fixture
def mirror(monkeypatch):
    """A loopback server standing in for Keras' weights address, through the mirror variable."""
    with LoopbackServer() as server:
        monkeypatch.setenv(weights.WEIGHTS_URL_ENV, server.url("/keras/"))
        yield server


def serve_imagenet_file(monkeypatch, mirror, content: bytes, published_md5: str | None = None) -> str:
    """Serve ``content`` as xception's no-top weights; make the registry expect its md5 (or the one given)."""
    spec = catalog.MODELS.get("xception")
    md5 = published_md5 or hashlib.md5(content).hexdigest()
    monkeypatch.setitem(catalog.MODELS._entries, "xception",
                        dataclasses.replace(spec, imagenet=dataclasses.replace(spec.imagenet, md5=md5)))
    mirror.files["/keras/" + spec.imagenet.path] = content
    return spec.imagenet.filename


def test_download_checks_md5_and_is_cached(keras_home, mirror, monkeypatch):
    filename = serve_imagenet_file(monkeypatch, mirror, b"weights" * 1000)
    path = weights.fetch_imagenet("xception")
    assert path == keras_home / "models" / filename and path.read_bytes() == b"weights" * 1000
    assert weights.fetch_imagenet("xception") == path
    assert mirror.total_requests() == 1, "a verified file in Keras' cache must not be fetched again"


def test_a_mirror_address_with_credentials_is_never_shown(keras_home, mirror, monkeypatch, capsys):
    serve_imagenet_file(monkeypatch, mirror, b"weights" * 1000)
    monkeypatch.setenv(weights.WEIGHTS_URL_ENV, mirror.url("/keras/").replace("http://", "http://user:s3cr3t@"))
    # Keras' get_file (urllib) cannot send userinfo: it fails, and says so without the password, in what
    # get_file prints and in the stage's error line.
    with pytest.raises(SystemExit) as stop:
        cli.run(cli.StageParser("weights", "x", None), lambda args: weights.fetch_imagenet("xception"), [])
    shown = capsys.readouterr()
    assert "Downloading data from http://***@127.0.0.1" in shown.out
    assert "weights: error: cannot fetch ImageNet weights for xception: tried http://***@127.0.0.1" in stop.value.code
    assert "s3cr3t" not in shown.out + shown.err + stop.value.code


def test_cached_file_with_wrong_md5_is_downloaded_again(keras_home, mirror, monkeypatch):
    filename = serve_imagenet_file(monkeypatch, mirror, b"weights" * 1000)
    (keras_home / "models").mkdir(parents=True)
    (keras_home / "models" / filename).write_bytes(b"weights" * 500)  # cut short by a killed download
    assert weights.fetch_imagenet("xception").read_bytes() == b"weights" * 1000
    assert mirror.total_requests() == 1


def test_download_with_wrong_md5_fails_and_keeps_nothing(keras_home, mirror, monkeypatch):
    filename = serve_imagenet_file(monkeypatch, mirror, b"tampered", published_md5="0" * 32)
    with pytest.raises(ConfigError, match=f"md5 is {hashlib.md5(b'tampered').hexdigest()}, not Keras' {'0' * 32}"):
        weights.fetch_imagenet("xception")
    assert not (keras_home / "models" / filename).exists()
    assert list((keras_home / "models").iterdir()) == [], "no partial file may be left behind"


def test_offline_fails_fast_saying_what_to_do(keras_home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(weights.WEIGHTS_URL_ENV, f"http://127.0.0.1:{port}/")
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        weights.fetch_imagenet("xception")
    message = str(err.value)
    assert time.monotonic() - started < 10
    for fragment in (f"127.0.0.1:{port}", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     str(keras_home / "models"), "b0042744bf5b25fce3cb969f33bebb97", "weights=none"):
        assert fragment in message


def test_mirror_that_never_answers_fails_within_the_timeout(keras_home, monkeypatch):
    with socket.socket() as silent:  # accepts connections (the kernel does) but never sends a byte
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv(weights.WEIGHTS_URL_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/")
        started = time.monotonic()
        with pytest.raises(ConfigError, match="cannot fetch ImageNet weights for xception"):
            weights.fetch_imagenet("xception", timeout=0.5)
        assert time.monotonic() - started < 5
    assert socket.getdefaulttimeout() is None, "the timeout must not outlive the download"


def test_prepare_init_from_a_file_and_from_none(params, tmp_path):
    params["weights"] = "none"
    params["experiments"]["captcha"]["model"] = "cnn"
    params["captcha"].update(width=32, height=32)
    record = weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "none")
    assert record == {"model": "cnn", "weights": "none"}
    assert weights.init_weights_file(tmp_path / "none") is None

    saved = tmp_path / "mine.weights.h5"
    models.build_core("cnn", (32, 32, 3)).save_weights(saved)
    params["weights"] = str(saved)
    record = weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "file")
    copied = weights.init_weights_file(tmp_path / "file")
    assert copied.read_bytes() == saved.read_bytes() and record["md5"] == hashlib.md5(saved.read_bytes()).hexdigest()


def test_a_trained_model_gives_its_base_as_the_initial_weights(params, tmp_path):
    # A run's model.keras (the small CPU run's, say) is the pretrained base of another experiment.
    params["experiments"]["captcha"].update(model="cnn", pooling="flatten")
    params["captcha"].update(width=32, height=32)
    params["weights"] = "none"
    trained = build_model(resolve(check_params(params), "captcha"), None)
    rng = np.random.default_rng(0)
    core = models.core_of(trained)
    core.set_weights([rng.normal(size=w.shape).astype("float32") for w in core.get_weights()])
    trained.save(tmp_path / "trained.keras")
    params["weights"] = str(tmp_path / "trained.keras")
    experiment = resolve(check_params(params), "captcha")
    assert experiment.weights_label == "file-trained.keras"
    record = weights.prepare_init(experiment, tmp_path / "init")
    assert record["file"] == "weights.weights.h5" and set(record) >= {"md5", "from_model"}
    start = models.initial_core("cnn", (32, 32, 3), weights.init_weights_file(tmp_path / "init"))
    for mine, theirs in zip(start.get_weights(), core.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
    assert not [p for p in (tmp_path / "init").iterdir() if p.name.startswith(".")], "no temporary left behind"


def test_a_keras_file_that_is_not_a_model_is_one_line(params, tmp_path):
    (tmp_path / "broken.keras").write_bytes(b"not a zip archive")
    params["weights"] = str(tmp_path / "broken.keras")
    with pytest.raises(ConfigError, match=r"weights file .*broken.keras' is not a Keras model .*model.keras"):
        check_params(params)


def test_prepare_init_refuses_a_file_of_another_model(params, tmp_path):
    saved = tmp_path / "cnn.weights.h5"
    models.build_core("cnn", (32, 32, 3)).save_weights(saved)
    params["weights"] = str(saved)
    params["experiments"]["captcha"]["model"] = "tiny"  # stands in for the experiment's Xception
    with pytest.raises(ConfigError, match="does not fit model 'tiny'"):
        weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "init")
    assert not (tmp_path / "init" / "source.json").exists()


@pytest.mark.slow  # a paced 4 s download, killed and run again in children (10-14 s)
def test_a_download_killed_midway_leaves_nothing_half_written_and_the_rerun_completes(keras_home, mirror,
                                                                                     monkeypatch):
    content = np.random.default_rng(0).integers(0, 256, 2_000_000, dtype=np.uint8).tobytes()
    filename = serve_imagenet_file(monkeypatch, mirror, content)
    served = "/keras/" + catalog.MODELS.get("xception").imagenet.path
    mirror.pace[served] = (50_000, 0.1)  # 4 s for the whole file: time to be killed half-way
    # The weights stage's download in a process of its own, against the registry entry this test serves.
    script = ("import dataclasses\n"
              "from transferbench.models import catalog, pretrained\n"
              "spec = catalog.MODELS.get('xception')\n"
              "catalog.MODELS._entries['xception'] = dataclasses.replace(\n"
              f"    spec, imagenet=dataclasses.replace(spec.imagenet, md5={hashlib.md5(content).hexdigest()!r}))\n"
              "print(pretrained.fetch_imagenet('xception'))\n")
    env = {**os.environ, "PYTHONPATH": f"{paths.ROOT / 'src'}{os.pathsep}{paths.ROOT}"}
    download = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while mirror.bytes_served[served] < 400_000:
            assert download.poll() is None, download.communicate()
            assert time.monotonic() < deadline, "the download never started"
            time.sleep(0.05)
    finally:
        download.kill()  # SIGKILL: no handler, no clean-up
        download.communicate()
    target = keras_home / "models" / filename
    assert not target.exists(), "a half-written file lies under the name Keras loads"

    del mirror.pace[served]
    rerun = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.strip().splitlines()[-1] == str(target) and target.read_bytes() == content
    assert sorted(p.name for p in target.parent.iterdir()) == [filename], "the killed run's download is removed"



def _other_architecture(path) -> None:
    import keras

    # Named: Keras numbers unnamed models per process (sequential_3 after three others), as test order decides.
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="other").save(path)


def _truncated(path) -> None:
    _other_architecture(path)
    path.write_bytes(path.read_bytes()[:-200])


def _with_lambda(path) -> None:
    import keras

    pixels = keras.Input((32, 32, 3))
    keras.Model(pixels, keras.layers.Lambda(lambda x: x * 2)(pixels)).save(path)


@pytest.mark.parametrize("make, reason", [
    (_other_architecture, "holds no model of this project (model 'other' has 0 nested models"),
    (_truncated, "is truncated"),
    (_with_lambda, "Lambda layer, Python code that Keras' safe mode refuses to run"),
], ids=["another architecture", "truncated", "Lambda"])
def test_a_bad_keras_model_as_weights_is_one_line_naming_the_file_and_what_is_accepted(params, tmp_path, make,
                                                                                        reason):
    make(tmp_path / "bad.keras")
    params["experiments"]["captcha"].update(model="cnn", pooling="flatten")
    params["captcha"].update(width=32, height=32)
    params["weights"] = str(tmp_path / "bad.keras")
    with pytest.raises(ConfigError) as err:
        weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "init")
    message = str(err.value)
    assert "\n" not in message and "bad.keras" in message and reason in message, message
    assert "accepted: a run's model.keras" in message and "safe mode" in message, message
    assert not (tmp_path / "init" / "source.json").exists()
