"""What the tuning tests share: a static call every lowering can run, its inputs, "auto" on it."""

import numpy as np
import tensorflow as tf

from tf_conv3dt import ops
from tf_conv3dt.ops import lowerings
from tf_conv3dt.ops.call import Call

# A static call every lowering can run: k3 s2 "same", 2 -> 3 channels.
CALL = dict(strides=2, padding="same")
SHAPE, KERNEL = (2, 4, 5, 3, 2), (3, 3, 3, 3, 2)


def static_call(shape=SHAPE, kernel=KERNEL, strides=(2, 2, 2), padding="same", output=None,
                data_format="channels_last"):
    """The record of a static call of the op (``ops.call.Call``)."""
    return Call.of(shape, kernel, "float32", strides, padding, None, (1, 1, 1), data_format,
                   output, 1)


def timed_here():
    """The lowerings tuning times on this machine: those "auto" may pick, less
    those untimed here (the native op without oneDNN)."""
    return [name for name in lowerings.names(auto=True)
            if not lowerings.get(name).untimed(static_call())]


def call_inputs(shape=SHAPE, kernel=KERNEL, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype("float32"),
            rng.standard_normal(kernel).astype("float32"))


def run_auto(x, kernel, **extra):
    return ops.conv3d_transpose(tf.constant(x), tf.constant(kernel), implementation="auto",
                                **CALL, **extra)
