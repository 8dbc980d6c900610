"""Fake quantization of activations for QAT: 8-bit, over a moving-average range.

What tfmot's ``MovingAverageQuantizer`` computes, without tfmot (which does
not import under Keras 3): the TFLite converter reads the ranges of these
``FakeQuantWithMinMaxVars`` ops as the int8 scales of the tensors they
quantize. Weights have their own grid (``ops.int8_grid``).
"""

import tensorflow as tf

from tf_conv3dt._keras import keras

EMA_DECAY = 0.999  # tfmot's default
INITIAL_RANGE = (-6.0, 6.0)  # tfmot's initial activation range


def add_range(layer, tensor):
    """A (min, max) pair of non-trainable weights of ``layer``, named
    ``<tensor>_min`` and ``<tensor>_max``, starting at ``INITIAL_RANGE``."""
    return tuple(layer.add_weight(name=f"{tensor}_{end}", shape=(), trainable=False,
                                  initializer=keras.initializers.Constant(value))
                 for end, value in zip(("min", "max"), INITIAL_RANGE))


def moving_average(x, min_var, max_var, training):
    """Asymmetric 8-bit fake quantization of ``x`` over a moving-average range.

    In training the range variables move towards the batch's range (widened to
    include 0, so that zero padding is exact in int8) by ``1 - EMA_DECAY``;
    the first batch replaces the initial range outright (tfmot keeps +-6 for
    thousands of steps, a step of 0.05 that stalls short trainings); an empty
    batch leaves them as they are.
    """

    def update():
        batch_min = tf.minimum(tf.reduce_min(x), 0.0)
        batch_max = tf.maximum(tf.reduce_max(x), 0.0)
        first = tf.logical_and(tf.equal(min_var, INITIAL_RANGE[0]),
                               tf.equal(max_var, INITIAL_RANGE[1]))
        decay = tf.where(first, 0.0, EMA_DECAY)
        has_values = tf.size(x) > 0
        new_min = tf.where(has_values, decay * min_var + (1 - decay) * batch_min, min_var)
        new_max = tf.where(has_values, decay * max_var + (1 - decay) * batch_max, max_var)
        return min_var.assign(new_min), max_var.assign(new_max)

    def keep():
        return tf.identity(min_var), tf.identity(max_var)

    low, high = tf.__internal__.smart_cond.smart_cond(
        training if training is not None else False, update, keep)
    return tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=8)
