"""Keras 3's int8 mode: ``quantize("int8")``'s int8 kernel, and an input on its own int8 grid.

Mode "int8": the kernel becomes int8 with one scale per filter (the largest
magnitude over the taps and its group's input channels maps to 127), and the
input is quantized to int8 at call time; the dtype policy becomes
``int8_from_<policy>``, and .keras files keep the int8 kernel. The layer is
traced through GEMM's int8 form, for integer TFLite.
"""

import tensorflow as tf

from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.ops.int8_grid import abs_max
from tf_conv3dt.quantization.modes import Mode


class KerasInt8(Mode):
    """What ``model.quantize("int8")`` makes of a Conv3DTranspose."""

    name = "int8"
    lowering = "gemm_int8"

    def add_kernel(self, layer, shape):
        layer.kernel = layer.add_weight(name="kernel", shape=shape, initializer="zeros",
                                        dtype="int8", trainable=False)
        layer.kernel_scale = layer.add_weight(name="kernel_scale", shape=(layer.filters,),
                                              initializer="ones", trainable=False)
        layer._is_quantized = True  # Keras 3's mark of a quantized layer

    def apply(self, layer):
        """Quantizes the built float ``layer``'s kernel and makes it hold this mode."""
        if layer.quantization == "qat":
            raise ValueError(f"Layer {layer.name!r} is set up for quantization-aware "
                             "training (quantization='qat'); convert it with the TFLite "
                             "converter instead of quantize('int8').")
        kernel = tf.convert_to_tensor(layer.kernel)
        per_group = layer.filters // layer.groups
        # Filter f of group i is kernel[..., f, group i's input channels].
        largest = abs_max(tf.reshape(kernel, (-1, per_group, layer.groups,
                                              kernel.shape[-1] // layer.groups)),
                          axis=(0, 3))
        scale = 127.0 / tf.reshape(tf.transpose(largest), (layer.filters,))
        values = tf.round(kernel * _by_kernel_entry(layer, scale))
        values = tf.cast(tf.clip_by_value(values, -127, 127), "int8")
        del layer.kernel
        self.add_kernel(layer, kernel.shape)
        layer.kernel.assign(values)
        layer.kernel_scale.assign(scale)
        layer.dtype_policy = keras.dtype_policies.get(f"int8_from_{layer.dtype_policy.name}")
        layer.numerics = self

    def inputs(self, layer, inputs):
        """The input on a symmetric int8 grid of its own largest magnitude
        (Keras's Dense quantizes its input per row; here the overlap-add mixes
        voxels, so one scale serves the whole input). The rounding passes
        gradients straight through."""
        scale = 127.0 / abs_max(inputs)
        return inputs + tf.stop_gradient(tf.round(inputs * scale) / scale - inputs)

    def kernel(self, layer):
        """The int8 kernel times its per-filter scale."""
        return (tf.cast(layer.kernel, layer.compute_dtype)
                / _by_kernel_entry(layer, tf.cast(layer.kernel_scale, layer.compute_dtype)))


def quantize(layer, mode):
    """The layer's ``quantize(mode)``, Keras 3's protocol: "int8" makes it hold
    :class:`KerasInt8`. Other modes raise NotImplementedError, which
    ``model.quantize`` reports as a warning and skips the layer."""
    if LEGACY_KERAS:
        raise RuntimeError("quantize() is Keras 3's protocol; under tf_keras use "
                           "tf_conv3dt.quantization.quantize_model.")
    if mode != KerasInt8.name:
        raise NotImplementedError(
            f"Conv3DTranspose supports quantize('int8') only; layer {layer.name!r} "
            f"stays {layer.dtype_policy.name}. Received: mode={mode!r}. For integer "
            "TFLite use tf_conv3dt.quantization.quantize_model or tf_conv3dt.export.")
    KerasInt8().apply(layer)


def _by_kernel_entry(layer, per_filter):
    """A value per filter (group-major, as the outputs are ordered) laid out
    as the kernel's last two axes, ``(filters // groups, in_channels)``."""
    by_group = tf.reshape(per_filter, (layer.groups, layer.filters // layer.groups))
    return tf.repeat(tf.transpose(by_group), layer.kernel.shape[-1] // layer.groups, axis=1)
