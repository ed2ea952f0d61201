"""transferbench: how much do ImageNet-pretrained weights help against random initialisation?

One module per DVC stage (run as ``python -m stages.<name>``) plus small shared modules.
"""

import os

# TensorFlow's C++ INFO lines (CUDA probing, oneDNN notices) bury the stage's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
