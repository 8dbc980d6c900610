"""The learned int8 ranges of a quantization-aware Conv3DTranspose (ours and tfmot's)."""

from tf_conv3dt import ops
from tf_conv3dt._keras import keras
from tf_conv3dt.quantization import fake_quant


class QATRanges:
    """Moving-average int8 ranges, by tensor: "pre_activation" and "output".
    The layer keeps them in ``self._ranges``, ``{tensor: (min
    variable, max variable)}``, and ``self._for_int8`` once it is quantized.

    A quantized layer is traced through the GEMM lowering's one product per
    stride phase, its bias and activation fused into each product where
    TFLite fuses them into FULLY_CONNECTED (:meth:`_fused_activation`): an
    int8 file then requantizes each output once, at the activated output's
    range, and fake quantization of the input (the previous layer's output,
    or an ``InputQuantizer``), the kernel and the output is exactly what it
    computes. Only an activation TFLite cannot fuse needs the
    "pre_activation" range (the products plus the bias) before it.
    """

    def _fused_activation(self):
        """The name of the layer's activation among those TFLite fuses
        (``ops.FUSED_ACTIVATIONS``), or None."""
        for name in ops.FUSED_ACTIVATIONS:
            if self.activation is keras.activations.get(name):
                return name
        return None

    def _quantize_for_int8(self, *tensors):
        """Traces the layer for int8 from now on, with moving-average ranges
        (non-trainable weights) for ``tensors``, and for "pre_activation" too
        where the activation is not fused."""
        self._for_int8 = True
        if self._fused_activation() is None:
            tensors += ("pre_activation",)
        for tensor in tensors:
            if tensor not in self._ranges:
                self._ranges[tensor] = fake_quant.add_range(self, tensor)

    def _fake_quantize(self, tensor, values, training):
        """``values`` fake-quantized on ``tensor``'s range, if the layer has one."""
        if tensor not in self._ranges:
            return values
        return fake_quant.moving_average(values, *self._ranges[tensor], training)
