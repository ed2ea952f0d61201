"""The Keras backend: which one, chosen before Keras' first import, and the devices it trains on.

Keras reads ``KERAS_BACKEND`` once, when it is first imported, and would default to TensorFlow even
where only JAX is installed (``.[jax]``). So the package's ``__init__`` sets it to the first installed
backend when it is unset (no import, no error: stages that need no model start without any backend),
and every stage that builds a model calls :func:`select` first, which refuses a bad choice in one line.

This is the only module that imports TensorFlow (inside its functions, once Keras has chosen it), so
nothing else in the project needs it installed.
"""

from __future__ import annotations

import os
import sys

from transferbench import KERAS_BACKENDS, first_installed_backend, installed
from transferbench.core.errors import UserError

# The pyproject extras that install each backend: (CPU, NVIDIA GPU).
EXTRAS = {"tensorflow": ("tensorflow", "tensorflow-gpu"), "jax": ("jax", "jax-gpu")}


class BackendError(UserError):
    """KERAS_BACKEND names a backend we cannot use, or none is installed."""


def _unsupported(name: str | None) -> BackendError:
    return BackendError(f"KERAS_BACKEND={name!r} is not a backend this project runs on; accepted: "
                        f"{', '.join(KERAS_BACKENDS)}")


def _install_hint(name: str) -> str:
    cpu, gpu = EXTRAS[name]
    return f"pip install -e '.[{cpu}]' (on an NVIDIA GPU: '.[{gpu}]')"


def select() -> str:
    """The backend Keras will use, checked before Keras is imported: KERAS_BACKEND if set, else TensorFlow
    if installed, else JAX. Raises :class:`BackendError` (one line: what is wrong, what installs a backend)."""
    requested = os.environ.get("KERAS_BACKEND")
    if requested:
        if requested not in KERAS_BACKENDS:
            raise _unsupported(requested)
        if not installed(requested):
            raise BackendError(f"KERAS_BACKEND={requested}, but {requested} is not installed: "
                               f"{_install_hint(requested)}")
        name = requested
    else:
        found = first_installed_backend()
        if found is None:
            extras = ", ".join(f"'.[{e}]'" for pair in EXTRAS.values() for e in pair)
            raise BackendError(f"no Keras backend is installed (tried: {', '.join(KERAS_BACKENDS)}); install one with "
                               f"pip install -e and one of the extras {extras}")
        name = found
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != name:
        # Keras keeps the backend of its first import; a later KERAS_BACKEND cannot change it.
        raise BackendError(f"Keras was imported with backend {keras.backend.backend()} before KERAS_BACKEND={name} "
                           "could apply; set KERAS_BACKEND before starting Python")
    os.environ["KERAS_BACKEND"] = name
    return name


def current() -> str:
    """The backend Keras runs on: its own answer once imported, else the one :func:`select` chose."""
    keras = sys.modules.get("keras")
    name = keras.backend.backend() if keras is not None else os.environ.get("KERAS_BACKEND")
    if name not in KERAS_BACKENDS:
        raise _unsupported(name)
    return name


def accelerators() -> list[str]:
    """The backend's GPUs as ``gpu:<index>``, in its own order; empty on a CPU-only machine or build."""
    if current() == "tensorflow":
        import tensorflow as tf

        return [f"gpu:{i}" for i, _ in enumerate(tf.config.list_logical_devices("GPU"))]
    import jax

    # jax.devices() lists the default platform's devices: the GPUs when jax[cuda12] finds one.
    return [f"gpu:{d.id}" for d in jax.devices() if d.platform == "gpu"]


def mirrored_strategy(devices: list[str]):
    """TensorFlow's data-parallel strategy over ``devices`` (``/cpu:0``, ``/gpu:1``); here so that no other
    module imports TensorFlow (a JAX install has none)."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(devices)


def tensorflow():
    """The ``tensorflow`` module, for TensorFlow's own input pipeline (training.batches.tf_dataset); here
    so that no other module imports TensorFlow (a JAX install has none)."""
    import tensorflow as tf

    return tf


def gpu_available() -> bool:
    return bool(accelerators())


def devices() -> list[str]:
    """The devices training can use, e.g. ``["cpu:0"]`` or ``["gpu:0", "gpu:1"]``: distribution ``none``
    trains on the first, ``data_parallel`` on all (transferbench.training.distribution)."""
    return accelerators() or ["cpu:0"]


def main() -> None:
    """``python -m transferbench.core.backend``: the backend training would use and its devices, or why none."""
    try:
        name = select()
    except BackendError as err:
        raise SystemExit(f"backend: error: {err}") from None
    print(f"{name} on {','.join(devices())}")


if __name__ == "__main__":
    main()
