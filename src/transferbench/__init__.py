"""transferbench: how much do ImageNet-pretrained weights help against random initialisation?

The package behind the DVC stages (``stages/``), one subpackage per layer: core, config, data, models,
study, tracking, training, reporting (docs/architecture.md).
"""

import os

# TensorFlow's C++ INFO lines (CUDA probing, oneDNN notices) bury the stage's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
