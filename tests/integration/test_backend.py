"""The Keras backend is chosen before Keras' first import, a bad choice is one line, and TensorFlow is
imported by transferbench.core.backend alone.

A backend that is installed is hidden from a child process by ``sys.modules[name] = None`` (what
``importlib.util.find_spec`` and ``import`` then see as absent), so each case runs in either
environment: with TensorFlow, and in the JAX one without it.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transferbench.core import paths

pytestmark = pytest.mark.jax


def run(code: str, hide: tuple[str, ...] = (), keras_backend: str | None = None) -> subprocess.CompletedProcess:
    """``code`` in a child process with the modules in ``hide`` absent and KERAS_BACKEND set (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(paths.ROOT / "src"), str(paths.ROOT)])
    if keras_backend is not None:
        env["KERAS_BACKEND"] = keras_backend
    prelude = "".join(f"import sys; sys.modules[{name!r}] = None\n" for name in hide)
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=paths.ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


# A stage's start as stages/train.py makes it: load_keras under cli.run, which prints a UserError as one line.
TRAIN_START = ("from transferbench import cli\n"
               "cli.run(cli.StageParser('train', None), lambda args: cli.load_keras(), [])\n")
NOT_LOADED = ("import sys; loaded = {name for name, module in sys.modules.items() if module is not None}\n"
              "assert not {'keras', 'tensorflow', 'jax'} & loaded, 'loaded before refusing'\n")


@pytest.mark.parametrize("keras_backend, hide, message", [
    ("jax", ("jax",), "train: error: KERAS_BACKEND=jax, but jax is not installed: pip install -e '.[jax]' "
                      "(on an NVIDIA GPU: '.[jax-gpu]')"),
    ("tensorflow", ("tensorflow",), "train: error: KERAS_BACKEND=tensorflow, but tensorflow is not installed: "
                                    "pip install -e '.[tensorflow]' (on an NVIDIA GPU: '.[tensorflow-gpu]')"),
    ("torch", (), "train: error: KERAS_BACKEND='torch' is not a backend this project runs on; accepted: "
                  "tensorflow, jax"),
    (None, ("tensorflow", "jax"), "train: error: no Keras backend is installed (tried: tensorflow, jax); install one "
                                  "with pip install -e and one of the extras '.[tensorflow]', '.[tensorflow-gpu]', "
                                  "'.[jax]', '.[jax-gpu]'"),
])
def test_a_backend_that_cannot_run_is_refused_in_one_line_before_keras_loads(keras_backend, hide, message):
    done = run(TRAIN_START, hide, keras_backend)
    assert done.returncode == 1 and done.stderr.strip() == message, done.stderr
    # The refusal comes before Keras (or a backend) is imported: checked in the same process.
    done = run("from transferbench.core import backend\ntry:\n    backend.select()\nexcept backend.BackendError:\n"
               "    pass\n" + NOT_LOADED, hide, keras_backend)
    assert done.returncode == 0, done.stderr


def test_the_weights_stage_refuses_a_backend_that_cannot_run_before_keras_loads():
    """weights@ reaches Keras only to fetch ImageNet weights or read a trained model: both check first."""
    for call in ("pretrained.fetch_imagenet('xception')", "pretrained.save_base(Path('m.keras'), Path('w.h5'))"):
        done = run("from pathlib import Path\nfrom transferbench import cli\n"
                   "from transferbench.models import pretrained\n"
                   f"cli.run(cli.StageParser('weights', None), lambda args: {call}, [])\n", keras_backend="torch")
        assert done.returncode == 1 and done.stderr.strip() == (
            "weights: error: KERAS_BACKEND='torch' is not a backend this project runs on; accepted: tensorflow, jax"), \
            done.stderr


def test_without_tensorflow_jax_is_chosen_on_every_path_to_keras():
    """No KERAS_BACKEND and no TensorFlow (the `.[jax]` install): a stage's load_keras, and a module that
    imports Keras at its top, both get JAX, where Keras alone would fail looking for TensorFlow."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed here; .ci/run runs this in its JAX environment")
    done = run("from transferbench.cli import load_keras\nprint(load_keras())\nimport keras\n"
               "print(keras.backend.backend())\n", hide=("tensorflow",))
    assert done.returncode == 0 and done.stdout.split() == ["jax", "jax"], done.stderr
    done = run("import transferbench.training.fit, keras\nprint(keras.backend.backend())\n", hide=("tensorflow",))
    assert done.returncode == 0 and done.stdout.split() == ["jax"], done.stderr


@pytest.mark.slow  # TensorFlow starts in a child (7 s)
def test_with_no_choice_made_tensorflow_comes_first():
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed here (the JAX environment)")
    done = run("from transferbench.cli import load_keras\nprint(load_keras())\nimport keras\n"
               "print(keras.backend.backend())\n")
    assert done.returncode == 0 and done.stdout.split() == ["tensorflow", "tensorflow"], done.stderr


def test_stages_that_need_no_model_run_without_any_backend():
    done = run("from stages.generate_captcha import main\nmain(['--help'])\n", hide=("tensorflow", "jax"))
    assert done.returncode == 0 and "python -m stages.generate_captcha" in done.stdout, done.stderr


def test_on_a_cpu_training_uses_cpu_0_at_float32():
    if any(Path("/dev").glob("nvidia*")):
        pytest.skip("a machine with an NVIDIA device: the GPU is used")
    import keras

    from transferbench.core import backend
    from transferbench.training.fit import configure_precision

    assert backend.current() == keras.backend.backend()
    assert backend.accelerators() == [] and backend.devices() == ["cpu:0"] and not backend.gpu_available()
    assert configure_precision() == "float32" == keras.mixed_precision.dtype_policy().name


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_the_backend_check_imports_tensorflow():
    # The package and its stages. A test may set up TensorFlow's devices (tests/integration/test_distribution.py)
    # and a benchmark measure through its API, each in a branch for that backend alone.
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "src/*.py", "stages/*.py"],
                            cwd=paths.ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    importers = sorted(name for name in listed
                       if any(m.split(".")[0] == "tensorflow" for m in imported_modules(paths.ROOT / name)))
    assert importers == ["src/transferbench/core/backend.py"]


@pytest.mark.slow  # TensorFlow starts in two children (7 s)
def test_the_readme_check_names_the_backend_and_its_devices():
    """`python -m transferbench.core.backend` (README: Backends and GPUs): the choice and its devices, or why none."""
    from transferbench import first_installed_backend

    done = run("import runpy; runpy.run_module('transferbench.core.backend', run_name='__main__')")
    on = "gpu:0" if any(Path("/dev").glob("nvidia*")) else "cpu:0"
    assert done.returncode == 0 and done.stdout.strip() == f"{first_installed_backend()} on {on}", done.stderr
    done = run("import runpy; runpy.run_module('transferbench.core.backend', run_name='__main__')",
               keras_backend="numpy")
    assert done.returncode == 1 and done.stderr.strip() == ("backend: error: KERAS_BACKEND='numpy' is not a backend "
                                                            "this project runs on; accepted: tensorflow, jax")
