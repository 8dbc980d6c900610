"""Keras 3's int8 protocol for Conv3DTranspose: ``quantize("int8")`` and the int8 call."""

import tensorflow as tf

from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.ops.int8_grid import abs_max


class Int8Protocol:
    """What ``model.quantize("int8")`` asks of a layer, for Conv3DTranspose.

    Mode "int8": the kernel becomes int8 with one scale per filter (the
    largest magnitude over the taps and its group's input channels maps to
    127), and the input is quantized to int8 at call time; the dtype policy
    becomes ``int8_from_<policy>``, and .keras files keep the int8 kernel.
    """

    def quantize_int8(self, mode):
        """The layer's ``quantize(mode)``. Other modes raise NotImplementedError,
        which ``model.quantize`` reports as a warning and skips the layer."""
        if LEGACY_KERAS:
            raise RuntimeError("quantize() is Keras 3's protocol; under tf_keras use "
                               "tf_conv3dt.quantization.quantize_model.")
        if mode != "int8":
            raise NotImplementedError(
                f"Conv3DTranspose supports quantize('int8') only; layer {self.name!r} "
                f"stays {self.dtype_policy.name}. Received: mode={mode!r}. For integer "
                "TFLite use tf_conv3dt.quantization.quantize_model or tf_conv3dt.export.")
        if self.quantization == "qat":
            raise ValueError(f"Layer {self.name!r} is set up for quantization-aware "
                             "training (quantization='qat'); convert it with the TFLite "
                             "converter instead of quantize('int8').")
        kernel = tf.convert_to_tensor(self.kernel)
        per_group = self.filters // self.groups
        # Filter f of group i is kernel[..., f, group i's input channels].
        largest = abs_max(tf.reshape(kernel, (-1, per_group, self.groups,
                                              self._input_channels // self.groups)),
                          axis=(0, 3))
        scale = 127.0 / tf.reshape(tf.transpose(largest), (self.filters,))
        values = tf.round(kernel * self._by_kernel_entry(scale))
        values = tf.cast(tf.clip_by_value(values, -127, 127), "int8")
        del self.kernel
        self._add_int8_kernel()
        self.kernel.assign(values)
        self.kernel_scale.assign(scale)
        self.dtype_policy = keras.dtype_policies.get(f"int8_from_{self.dtype_policy.name}")

    def _keras_quantization_mode(self):
        """Keras 3's quantization mode of this layer (its dtype policy's); None
        under tf_keras, which has no such protocol."""
        return None if LEGACY_KERAS else self.quantization_mode

    def _by_kernel_entry(self, per_filter):
        """A value per filter (group-major, as the outputs are ordered) laid
        out as the kernel's last two axes, ``(filters // groups, in_channels)``."""
        by_group = tf.reshape(per_filter, (self.groups, self.filters // self.groups))
        return tf.repeat(tf.transpose(by_group), self._input_channels // self.groups, axis=1)

    def _add_int8_kernel(self):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, self.filters // self.groups, self._input_channels),
            initializer="zeros", dtype="int8", trainable=False)
        self.kernel_scale = self.add_weight(name="kernel_scale", shape=(self.filters,),
                                            initializer="ones", trainable=False)
        self._is_quantized = True

    def _int8_call(self, inputs, output_shape=None, training=None):
        """Keras 3's call for ``quantize("int8")``: the int8 kernel times its
        per-filter scale, and the input on a symmetric int8 grid of its own
        largest magnitude (Keras's Dense quantizes its input per row; here the
        overlap-add mixes voxels, so one scale serves the whole input). The
        rounding passes gradients straight through."""
        inputs = tf.cast(inputs, self.compute_dtype)
        scale = 127.0 / abs_max(inputs)
        inputs += tf.stop_gradient(tf.round(inputs * scale) / scale - inputs)
        kernel = (tf.cast(self.kernel, self.compute_dtype)
                  / self._by_kernel_entry(tf.cast(self.kernel_scale, self.compute_dtype)))
        return self._apply(inputs, kernel, output_shape, training)
