"""transferbench: how much do ImageNet-pretrained weights help against random initialisation?

The package behind the DVC stages (``stages/``), one subpackage per layer: core, config, data, models,
study, tracking, training, reporting (docs/architecture.md).
"""

import glob
import importlib.util
import os


def nvidia_device_present() -> bool:
    """Whether the machine has an NVIDIA device node (``/dev/nvidia*``), without starting CUDA or a backend."""
    return bool(glob.glob("/dev/nvidia*"))


# TensorFlow's C++ logging, read once when TensorFlow loads: its INFO lines (oneDNN notices) bury the
# stage's own output. Without an NVIDIA device its ERROR lines go too: CUDA probing (`failed call to
# cuInit`, printed on every start of a CPU machine) is the only one a successful run shows there. With
# one, errors stay: they say why a GPU is not used. The user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if nvidia_device_present() else "3")

# The Keras backends the project runs on, in order of preference when KERAS_BACKEND is unset: TensorFlow
# (the CPU default: JAX compiles Xception's separable convolutions slowly on a CPU), then JAX.
KERAS_BACKENDS = ("tensorflow", "jax")


def installed(name: str) -> bool:
    """Whether module ``name`` could be imported, without importing it (TensorFlow takes seconds)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:  # in sys.modules without a spec: present
        return True


def first_installed_backend() -> str | None:
    return next((name for name in KERAS_BACKENDS if installed(name)), None)


# Keras reads KERAS_BACKEND once, at its first import, and without it looks for TensorFlow even where
# only JAX is installed (`.[jax]`). Every path to Keras imports this package first, so the choice is made
# here: nothing is imported and nothing fails (stages that need no model run with no backend at all);
# a stage that builds a model checks the choice first (transferbench.core.backend.select).
if not os.environ.get("KERAS_BACKEND") and (_found := first_installed_backend()):
    os.environ["KERAS_BACKEND"] = _found
