"""The symmetric int8 grid of a weight: its abs-max scale, and the weight rounded onto it."""

import tensorflow as tf

TINY = 1e-12


def abs_max(x, axis=None, keepdims=False):
    """The largest magnitude of ``x`` (over ``axis``; all of it by default),
    at least ``TINY`` so that an all-zero tensor gets a finite scale: the
    value a symmetric int8 grid maps to 127."""
    return tf.maximum(tf.reduce_max(tf.abs(x), axis=axis, keepdims=keepdims), TINY)


def per_output_channel(matrix, input_axis):
    """A FULLY_CONNECTED's weights on the grid TFLite's converter gives them:
    symmetric, one scale per output channel (the largest magnitude over
    ``input_axis`` at 127). Rounded with plain ops, whose gradient passes
    straight through: the converter folds them into a constant already on
    that grid, which it then quantizes exactly."""
    scale = abs_max(matrix, axis=input_axis, keepdims=True) / 127.0
    return matrix + tf.stop_gradient(tf.round(matrix / scale) * scale - matrix)
