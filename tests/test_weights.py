"""The weights stage: Keras' ImageNet files through a loopback server, md5 checks, offline failure."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import threading
import time

import pytest

from transferbench.models import backbones as models
from transferbench.models import pretrained as weights
from transferbench.core.errors import ConfigError
from transferbench.study.experiments import resolve
from transferbench.study.params import check_params


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    return tmp_path / "keras"


@pytest.fixture
def weights_server(tmp_path):
    """Serves tmp_path/served over HTTP on loopback; counts requests."""
    root = tmp_path / "served"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", root, hits
    server.shutdown()


def fake_imagenet_file(monkeypatch, root, content: bytes, published_md5: str | None = None):
    """Put a file where the mirror serves xception's notop weights; make the registry expect its md5."""
    spec = models.MODELS.get("xception")
    md5 = published_md5 or hashlib.md5(content).hexdigest()
    monkeypatch.setitem(models.MODELS._entries, "xception",
                        dataclasses.replace(spec, imagenet=dataclasses.replace(spec.imagenet, md5=md5)))
    target = root / spec.imagenet.path
    target.parent.mkdir(parents=True)
    target.write_bytes(content)
    return spec.imagenet.filename


def test_download_checks_md5_and_is_cached(keras_home, weights_server, monkeypatch):
    url, root, hits = weights_server
    monkeypatch.setenv(weights.WEIGHTS_URL_ENV, url)
    filename = fake_imagenet_file(monkeypatch, root, b"weights" * 1000)
    path = weights.fetch_imagenet("xception")
    assert path == keras_home / "models" / filename and path.read_bytes() == b"weights" * 1000
    assert weights.fetch_imagenet("xception") == path
    assert len(hits) == 1, "a verified file in Keras' cache must not be fetched again"


def test_download_with_wrong_md5_fails_and_keeps_nothing(keras_home, weights_server, monkeypatch):
    url, root, _ = weights_server
    monkeypatch.setenv(weights.WEIGHTS_URL_ENV, url)
    filename = fake_imagenet_file(monkeypatch, root, b"tampered", published_md5="0" * 32)
    with pytest.raises(ConfigError, match="md5"):
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


def test_prepare_init_from_a_file_and_from_none(params, tmp_path):
    params["weights"] = "none"
    params["experiments"]["captcha"]["model"] = "cnn"
    params["captcha"].update(width=32, height=32)
    record = weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "none")
    assert record == {"model": "cnn", "weights": "none"}
    assert weights.init_weights_file(tmp_path / "none") is None

    saved = tmp_path / "mine.weights.h5"
    models.build_core("cnn", (32, 32, 3), "max").save_weights(saved)
    params["weights"] = str(saved)
    record = weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "file")
    copied = weights.init_weights_file(tmp_path / "file")
    assert copied.read_bytes() == saved.read_bytes() and record["md5"] == weights.md5sum(saved)


def test_prepare_init_refuses_a_file_of_another_model(params, tmp_path):
    saved = tmp_path / "cnn.weights.h5"
    models.build_core("cnn", (32, 32, 3), "max").save_weights(saved)
    params["weights"] = str(saved)  # the experiment is Xception
    with pytest.raises(ConfigError, match="does not fit model 'xception'"):
        weights.prepare_init(resolve(check_params(params), "captcha"), tmp_path / "init")
    assert not (tmp_path / "init" / "source.json").exists()
