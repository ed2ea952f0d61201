"""Keras classes of our own. A saved model names them by this module, which Keras imports to load it."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="transferbench")
class CaffePreprocess(keras.layers.Layer):
    """VGG's 'caffe' preprocessing: RGB -> BGR, minus the ImageNet channel means, no scaling."""

    MEAN_BGR = (103.939, 116.779, 123.68)

    def call(self, x):
        x = keras.ops.flip(keras.ops.cast(x, self.compute_dtype), axis=-1)
        return x - keras.ops.convert_to_tensor(self.MEAN_BGR, dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="transferbench")
class OneVsRestSquaredHinge(keras.losses.Loss):
    """Squared hinge on integer labels: class c -> +1 for its own margin, -1 for the others.

    Binary outputs have one margin (label 1 -> +1, label 0 -> -1). The mapping happens here, so
    the data feed keeps integer labels for every head.
    """

    def __init__(self, name: str = "one_vs_rest_squared_hinge", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        n_margins = y_pred.shape[-1]
        if n_margins == 1:
            signs = keras.ops.reshape(keras.ops.cast(labels, "float32") * 2.0 - 1.0, (-1, 1))
        else:
            signs = keras.ops.one_hot(labels, n_margins, dtype="float32") * 2.0 - 1.0
        return keras.ops.mean(keras.ops.square(keras.ops.relu(1.0 - signs * y_pred)), axis=-1)


@keras.saving.register_keras_serializable(package="transferbench")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean recall over the classes seen (one output): what checkpoints and tuning watch where training
    balances the classes (pets: 10% cats), so the chosen epoch is not the one that best favours dogs.

    ``threshold`` set: one binary output, class 1 above it (the head's decision rule); else argmax.
    Unweighted by design: Keras hands sample weights (the class weights) to ``weighted_metrics`` only.
    """

    def __init__(self, n_classes: int, threshold: float | None = None, name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.n_classes, self.threshold = n_classes, threshold
        self.hits = self.add_variable(shape=(n_classes,), initializer="zeros", name="hits")
        self.counts = self.add_variable(shape=(n_classes,), initializer="zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        if self.threshold is None:
            predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        else:
            predicted = ops.cast(ops.reshape(ops.cast(y_pred, "float32"), (-1,)) > self.threshold, "int32")
        truth = ops.one_hot(labels, self.n_classes, dtype="float32")
        right = ops.expand_dims(ops.cast(ops.equal(predicted, labels), "float32"), -1)
        self.counts.assign_add(ops.sum(truth, axis=0))
        self.hits.assign_add(ops.sum(truth * right, axis=0))

    def result(self):
        ops = keras.ops
        seen = ops.cast(self.counts > 0, "float32")
        recall = self.hits / ops.maximum(self.counts, 1.0)
        return ops.sum(recall * seen) / ops.maximum(ops.sum(seen), 1.0)

    def reset_state(self):
        for variable in (self.hits, self.counts):
            variable.assign(keras.ops.zeros(variable.shape, dtype=variable.dtype))

    def get_config(self):
        return {**super().get_config(), "n_classes": self.n_classes, "threshold": self.threshold}
