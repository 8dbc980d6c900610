"""8-bit quantization in TensorFlow ops: the abs-max scale, and fake quantization for QAT.

:func:`abs_max` gives the one symmetric int8 grid: Keras 3's int8 kernel and
input and the QAT kernel are all quantized over it. The fake quantizers compute what
tfmot's ``MovingAverageQuantizer`` and ``LastValueQuantizer`` do, without
tfmot (which does not import under Keras 3): the TFLite converter reads the
ranges of these ``FakeQuantWithMinMaxVars`` ops as the int8 scales of the
tensors they quantize.
"""

import tensorflow as tf

EMA_DECAY = 0.999  # tfmot's default
INITIAL_RANGE = (-6.0, 6.0)  # tfmot's initial activation range
TINY = 1e-12


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


def abs_max(x, axis=None, keepdims=False):
    """The largest magnitude of ``x`` (over ``axis``; all of it by default),
    at least ``TINY`` so that an all-zero tensor gets a finite scale: the
    value a symmetric int8 grid maps to 127."""
    return tf.maximum(tf.reduce_max(tf.abs(x), axis=axis, keepdims=keepdims), TINY)


def symmetric_per_tensor(kernel):
    """Symmetric, narrow-range 8-bit fake quantization over the kernel's own
    largest magnitude (tfmot's ``LastValueQuantizer`` as used for kernels)."""
    bound = abs_max(kernel)
    return tf.quantization.fake_quant_with_min_max_vars(kernel, -bound, bound, num_bits=8,
                                                        narrow_range=True)
