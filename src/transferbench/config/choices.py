"""The names params accept for an experiment's pooling, augmentation and optimizer.

Plain tuples in a module of their own: the model code reads them without loading pydantic, so building
a model (benchmarks/gpu.py on a bare GPU machine) needs only Keras, NumPy and a backend.
"""

POOLINGS = ("max", "avg", "flatten")  # the core's feature map -> vector: global max / average, flatten
AUGMENTATIONS = ("none", "flip")  # flip: random horizontal flips, in training only
OPTIMIZERS = ("adam", "rmsprop", "sgd")  # sgd: momentum 0.9
