"""The learned int8 ranges of a quantization-aware Conv3DTranspose (ours and tfmot's)."""

from tf_conv3dt._keras import keras
from tf_conv3dt.quantization import fake_quant


class QATRanges:
    """Moving-average int8 ranges, by tensor: "conv_output" (the products
    before the bias) and "output". The layer keeps them in ``self._ranges``,
    ``{tensor: (min variable, max variable)}``."""

    def _add_quantization_ranges(self, *tensors):
        """Adds moving-average int8 ranges (non-trainable weights) for ``tensors``.

        With any range the layer is traced through the int8-oriented lowering.
        tfmot's wrapper quantizes the input, kernel and output itself and asks
        only for "conv_output": the range of the products before the bias,
        which the TFLite converter needs to keep FULLY_CONNECTED in int8.
        """
        low, high = fake_quant.INITIAL_RANGE
        for tensor in tensors:
            if tensor not in self._ranges:
                self._ranges[tensor] = tuple(
                    self.add_weight(name=f"{tensor}_{end}", shape=(), trainable=False,
                                    initializer=keras.initializers.Constant(value))
                    for end, value in (("min", low), ("max", high)))

    def _fake_quantize(self, tensor, values, training):
        """``values`` fake-quantized on ``tensor``'s range, if the layer has one."""
        if tensor not in self._ranges:
            return values
        return fake_quant.moving_average(values, *self._ranges[tensor], training)
