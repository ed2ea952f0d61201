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
