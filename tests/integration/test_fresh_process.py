"""What only a fresh process shows: which modules an import pulls in, a stage's error line on stderr, and a
saved model loading where nothing but the loader was imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from transferbench.core import paths

NO_KERAS = "import sys; assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules, sorted(sys.modules)"


@pytest.mark.parametrize("code", [
    "from transferbench.study.params import load_params; load_params()",
    "import transferbench.data.generation, transferbench.data.fetching, transferbench.data.preparation, "
    "transferbench.data.validation",
    "from transferbench.study.runs import runs; from transferbench.study.params import load_params; "
    "runs(load_params(), 'captcha')",
])
def test_checking_params_and_the_data_stages_import_no_keras(code):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.ROOT / "src"), str(paths.ROOT)])}
    done = subprocess.run([sys.executable, "-c", f"{code}; {NO_KERAS}"], cwd=paths.ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_bad_param_in_a_stage_is_one_line_without_a_traceback(tmp_path, params):
    import yaml

    params["seeds"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.ROOT / "src"), str(paths.ROOT)])}
    code = ("import sys; from transferbench.core.errors import ConfigError; from transferbench.study.params "
            f"import load_params\ntry:\n    load_params({str(tmp_path / 'params.yaml')!r})\n"
            "except ConfigError as err:\n    raise SystemExit(f'error: {err}')")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr == "error: seeds must be >= 1, got 0\n", done.stderr
    assert Path(tmp_path / "params.yaml").exists()


@pytest.mark.slow  # builds VGG16, and TensorFlow starts twice (9 s)
@pytest.mark.jax
def test_a_fresh_process_loads_a_model_with_our_layer_and_loss(tmp_path):
    # Only backbones is imported there, as in evaluation: the custom classes must come with load_model.
    import keras

    from transferbench.models.backbones import create_base
    from transferbench.models.custom_objects import OneVsRestSquaredHinge

    base = create_base("vgg16", (32, 32, 3), "avg")
    base.compile(optimizer="sgd", loss=OneVsRestSquaredHinge())
    base.save(tmp_path / "m.keras")
    code = ("import sys; from transferbench.models.backbones import load_model; "
            f"m = load_model({str(tmp_path / 'm.keras')!r}); print(type(m.loss).__name__, m.layers[1].name)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(paths.ROOT / "src"), str(paths.ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["OneVsRestSquaredHinge", "preprocess"]
    assert isinstance(keras.saving.load_model(tmp_path / "m.keras").loss, OneVsRestSquaredHinge)
