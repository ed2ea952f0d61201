"""What the benchmarks share: the machine line printed with every figure, best-of-interleaved-rounds timing,
and the assumed GPU consumption (multiply-adds per image against ResNet-50's published training rate)."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks.common` when run as a script

from transferbench.core.parallel import cpu_count  # noqa: E402


def machine(*software: str) -> str:
    """Cores, CPU model, Python and the given package versions, in one line."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    cores = f"{cpu_count()} usable cores ({os.cpu_count()} online)"
    return ", ".join([f"{cores}, {cpu}; Python {platform.python_version()}", *software])


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (a pool's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def timed(call: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``call()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    call()
    return time.perf_counter() - wall, cpu_seconds() - cpu


Timing = tuple[float, float]

# NVIDIA's ResNet-50 v1.5 training on one A100, mixed precision + XLA (TensorFlow), times the H100's
# speed-up over the A100 on MLPerf Training v3.0 ResNet-50 (same Dell systems: 1.8x), rounded up to 2.
A100_RESNET50 = 2375.0
H100_OVER_A100 = 2.0


def best_of_rounds(methods: dict[str, Callable[[], Timing]],
                   repeat: int) -> tuple[list[dict[str, Timing]], dict[str, Timing]]:
    """Every round runs each method once, in turn; each method keeps its fastest round.

    Interleaving makes load from other processes on a shared machine skew all methods alike.
    Returns the rounds (for the spread) and the best (wall, CPU) per method.
    """
    rounds = [{name: run() for name, run in methods.items()} for _ in range(repeat)]
    return rounds, {name: min((r[name] for r in rounds), key=lambda t: t[0]) for name in methods}


def spread(rounds: list[dict[str, Timing]], name: str) -> str:
    """Wall seconds of every round of one method, for the table's last column."""
    return " ".join(f"{r[name][0]:.2f}" for r in rounds)


def macs_per_image(model) -> int:
    """Multiply-adds of one forward pass of a Keras model: convolutions (plain, depthwise, separable), dense layers."""
    import keras
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += macs_per_image(layer)
            continue
        if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense)):
            continue
        cin, out = layer.input.shape[-1], layer.output.shape
        positions = int(np.prod(out[1:-1]))
        if isinstance(layer, layers.Dense):
            total += positions * cin * layer.units
            continue
        window = int(np.prod(layer.kernel_size))
        if isinstance(layer, layers.SeparableConv2D):
            total += positions * (window * cin * layer.depth_multiplier + cin * layer.depth_multiplier * layer.filters)
        elif isinstance(layer, layers.DepthwiseConv2D):
            total += positions * window * cin * layer.depth_multiplier
        else:
            total += positions * window * cin * layer.filters // layer.groups
    return total
