"""The names params accept for an experiment's pooling.

A plain tuple in a module of its own: the model code reads it without loading pydantic, so building
a model (benchmarks/gpu.py on a bare GPU machine) needs only Keras, NumPy and a backend.
"""

POOLINGS = ("max", "avg", "flatten")  # the core's feature map -> vector: global max / average, flatten
