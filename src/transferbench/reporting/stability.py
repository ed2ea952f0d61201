"""When a run's curve settled, and whether it learnt at all: epochs to stability and the curve labels."""

from __future__ import annotations

import math
from collections.abc import Sequence

STABILITY_TOLERANCE = 0.02


STABILITY_DEFINITION = (
    "the first epoch from which validation accuracy never again falls more than "
    f"{STABILITY_TOLERANCE} below the run's best validation accuracy"
)


def epochs_to_stability(epochs: Sequence[int], val_accuracy: Sequence[float],
                        tolerance: float = STABILITY_TOLERANCE) -> int | None:
    """The first epoch from which validation accuracy never again falls more than ``tolerance`` below the
    run's best validation accuracy; None when the last epoch is itself that far below (not stable yet:
    an overfitting run on a small validation set, say).

    Absolute, not relative, and measured from the best epoch (the checkpoint the run keeps), so a run that
    dips late is not called stable early; 0.02 is well above the epoch-to-epoch sampling noise of the
    reference studies' validation sets (binomial standard error ~0.004 at 95% on pets' 2,835 images) and
    below the gap reference study 000 reports between the arms (0.023), so it separates "still moving" from "noise".
    """
    if len(epochs) != len(val_accuracy) or not epochs:
        raise ValueError(f"need one validation accuracy per epoch, got {len(epochs)} epochs and "
                         f"{len(val_accuracy)} values")
    floor = max(val_accuracy) - tolerance
    below = [i for i, value in enumerate(val_accuracy) if value < floor]
    if not below:
        return int(epochs[0])
    return int(epochs[below[-1] + 1]) if below[-1] + 1 < len(epochs) else None


# A run is labelled, and left out of epochs to stability, when its curve cannot say when it settled.
DID_NOT_LEARN, STILL_IMPROVING = "did not learn", "still improving"


CHANCE_MARGIN = (0.02, 2)  # (floor, binomial standard errors on the validation images) above chance


CHANCE_DEFINITION = (
    f"a run *did not learn* when its best validation accuracy is within max({CHANCE_MARGIN[0]}, {CHANCE_MARGIN[1]} "
    "binomial standard errors of chance accuracy on the validation images) of chance (1 / classes per output); "
    "a run is *still improving* when its best validation epoch is its last")


def chance_margin(chance: float, validation_images: int | None) -> float:
    """How far above chance a best validation accuracy must be to count as learning (the floor alone when
    params do not give the validation split's size)."""
    floor, errors = CHANCE_MARGIN
    if not validation_images:
        return floor
    return max(floor, errors * math.sqrt(chance * (1 - chance) / validation_images))
