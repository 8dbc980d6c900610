"""Quantization-aware training: the layer's own ("qat"), and its part under tfmot ("tfmot").

A quantization-aware layer is traced through GEMM's int8 form, each stride
phase one product with its weights on the int8 grid TFLite's converter
gives a FULLY_CONNECTED's (``gemm_int8.ON_THE_INT8_GRID``), its bias and
activation fused into each product where TFLite fuses them
(``layer.fused_activation``): an int8 file then requantizes each output
once, at the activated output's range, and fake quantization of the input
(the previous layer's output, or an ``InputQuantizer``), the kernel and the
output is exactly what it computes. Only an activation TFLite cannot fuse
needs a "pre_activation" range (the products plus the bias) before it.
"""

from tf_conv3dt.ops.lowerings import gemm_int8
from tf_conv3dt.quantization import fake_quant
from tf_conv3dt.quantization.modes import Mode


class QAT(Mode):
    """``quantization="qat"``, without tfmot: 8-bit fake quantization of the
    activated output on a range learned as a moving average, and of the
    kernel, product by product, on the file's grid."""

    name = "qat"
    configurable = True
    lowering = gemm_int8.ON_THE_INT8_GRID
    learns_output_range = True
    """Whether the layer learns its activated output's range (tfmot's own
    quantizer learns it under tfmot)."""

    def __init__(self):
        self.ranges = {}
        """``{tensor: (min variable, max variable)}``: "output", "pre_activation"."""

    def add_ranges(self, layer):
        tensors = ("output",) if self.learns_output_range else ()
        if layer.fused_activation is None:
            tensors += ("pre_activation",)
        for tensor in tensors:
            self.ranges[tensor] = fake_quant.add_range(layer, tensor)

    def outputs(self, layer, outputs, training):
        if layer.fused_activation is None:
            outputs = layer.activation(self._fake_quantized("pre_activation", outputs, training))
        return self._fake_quantized("output", outputs, training)

    def _fake_quantized(self, tensor, values, training):
        """``values`` fake-quantized on ``tensor``'s range, where it has one."""
        if tensor not in self.ranges:
            return values
        return fake_quant.moving_average(values, *self.ranges[tensor], training)


class UnderTfmot(QAT):
    """The layer's part of tfmot's QAT (``quantization.tfmot``'s config applies
    it): tfmot quantizes the activated output and, with its
    collaborative-optimization quantizers, the kernel before the grid."""

    name = "tfmot"
    configurable = False
    learns_output_range = False
