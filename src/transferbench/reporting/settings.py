"""The settings an arm trains in (Kornblith, Shlens & Le 2019), as metrics.json and the report name them."""

from __future__ import annotations

from transferbench.config.weights import RANDOM

# The three settings of an experiment's arms (Kornblith, Shlens & Le 2019), as metrics.json names them.
RANDOM_SETTING, FIXED, FINE_TUNED = "random", "fixed_features", "fine_tuned"
SETTING_TITLES = {RANDOM_SETTING: "random init", FIXED: "fixed features", FINE_TUNED: "fine-tuned"}
FIXED_SUFFIX = "-fixed"  # imagenet-fixed, file-<name>-fixed: the pretrained base frozen under a linear/SVM head


def setting_of(arm: str) -> str:
    """The setting an arm label stands for when nothing says more (runs written before metrics.json named it).

    The plan knows better: an experiment whose own recipe freezes the base trains its plain arm as fixed features.
    """
    if arm == RANDOM:
        return RANDOM_SETTING
    return FIXED if arm.endswith(FIXED_SUFFIX) else FINE_TUNED
