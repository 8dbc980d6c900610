"""A kernel initializer that starts a strided Conv3DTranspose without checkerboard artifacts.

With stride ``s`` and a kernel length ``k``, output voxels of a transposed
convolution receive different numbers of kernel taps, in the pattern of
``k mod s`` (Odena et al., Distill 2016): a freshly initialised k3 s2 layer
draws a checkerboard even on a constant input. Where every kernel length is a
multiple of its stride (``k = m * s``), :class:`CheckerboardFree` gives each
stride phase the same ``(m, m, m)`` sub-kernel, as ICNR does for sub-pixel
layers (Aitken et al. 2017): the layer's output is then exactly
nearest-neighbour up-sampling of a stride-1 transposed convolution with that
sub-kernel, so it starts flat where its input is.
"""

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt._keras import keras

NAME = "checkerboard_free"


@keras.utils.register_keras_serializable(package="tf_conv3dt")
class CheckerboardFree(keras.initializers.Initializer):
    """Replicates one sub-kernel, drawn from ``base``, across the stride phases.

    The kernel ``(kd, kh, kw, filters, in_channels)`` is drawn from ``base``
    whole (so its fans, and the variance they set, are the base's for this
    shape), and each tap ``t`` then takes the value of tap ``(t // s) * s``:
    every output voxel still sums ``kd // sd * kh // sh * kw // sw`` taps per
    input channel, as many as before, each from the base's distribution.

    Args:
      base: the initializer the sub-kernel is drawn from (a name, a config
        or an instance), "glorot_uniform" by default.
      strides: the layer's strides (int or 3 ints); a Conv3DTranspose given
        this initializer (or ``kernel_initializer="checkerboard_free"``)
        passes its own.
    """

    def __init__(self, base="glorot_uniform", strides=None):
        self.base = keras.initializers.get(base)
        self.strides = None if strides is None else shapes.normalize_tuple(strides, "strides")

    def for_layer(self, kernel_size, strides):
        """This initializer with ``strides``, after checking that every kernel
        length is a multiple of its stride."""
        strides = shapes.normalize_tuple(strides, "strides")
        bad = [axis for axis, (k, s) in enumerate(zip(kernel_size, strides)) if k % s]
        if bad:
            works = "; ".join(f"axis {axis}: a multiple of {strides[axis]}" for axis in bad)
            raise ValueError(
                f"kernel_initializer={NAME!r} gives every stride phase the same sub-kernel, so "
                f"each kernel length must be a multiple of its stride ({works}). Received: "
                f"kernel_size={tuple(kernel_size)}, strides={strides}")
        return CheckerboardFree(self.base, strides)

    def __call__(self, shape, dtype=None, **kwargs):
        if self.strides is None:
            raise ValueError(f"{NAME!r} needs the layer's strides: give it to a "
                             "Conv3DTranspose as kernel_initializer, or pass strides=.")
        self.for_layer(shape[:3], self.strides)
        kernel = tf.convert_to_tensor(self.base(shape, dtype=dtype))
        for axis, s in enumerate(self.strides):
            if s > 1:  # tap t takes tap (t // s) * s: one sub-kernel tap per stride block
                kernel = tf.repeat(tf.gather(kernel, tf.range(0, shape[axis], s), axis=axis),
                                   s, axis=axis)
        return kernel

    def get_config(self):
        return {"base": keras.initializers.serialize(self.base), "strides": self.strides}


def get(identifier):
    """``keras.initializers.get``, and "checkerboard_free" for :class:`CheckerboardFree`."""
    if identifier == NAME:
        return CheckerboardFree()
    # tf_keras serializes it by its bare class name, which its registry does not know.
    if isinstance(identifier, dict) and identifier.get("class_name") in (
            "CheckerboardFree", "tf_conv3dt>CheckerboardFree"):
        return CheckerboardFree.from_config(identifier["config"])
    return keras.initializers.get(identifier)
