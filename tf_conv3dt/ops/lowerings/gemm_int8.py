"""GEMM's int8 form, each stride phase one product for integer TFLite, and the flags it replaces."""

import warnings

from tf_conv3dt.ops import int8_grid
from tf_conv3dt.ops.lowerings import Lowering, get, register
from tf_conv3dt.ops.lowerings.gemm import gemm, unrolled_refusal


class GemmInt8(Lowering):
    """The GEMM lowering with each stride phase's taps summed inside one
    matmul (the shifted input windows side by side) instead of one product
    per tap. TensorFlow runs it up to 2x slower, but an int8 TFLite model
    then accumulates every output in int32 once instead of requantizing
    after each tap's addition: its largest error drops from 2-4.5% of the
    output range to about 1% for overlapping kernels.

    The bias and activation (``ops.FUSED_ACTIVATIONS``) are applied to each
    phase's product, so that an int8 file requantizes every output once, at
    the activated output's range. A call that names it keeps it inside
    ``forced_implementation``: a quantized layer's numerics are this form's.
    "auto" never takes it, and a grouped call runs one call per group, each
    one FULLY_CONNECTED for the converter.

    Args:
      product_weights: None, or ``(matrix, input_axis) -> matrix`` applied to
        each product's weights: :data:`ON_THE_INT8_GRID` puts them on the
        int8 grid TFLite's converter gives a FULLY_CONNECTED's (symmetric,
        one scale per output channel), so that quantization-aware training
        sees the file's weights.
    """

    name = "gemm_int8"
    auto = False
    fuses_epilogue = True
    keeps_its_calls = True

    def __init__(self, product_weights=None):
        self.product_weights = product_weights

    def refuses(self, call):
        return unrolled_refusal(call, self.name)

    def forward(self, x, kernel, plan, call, epilogue=None):
        return gemm(x, kernel, plan, call.strides, call.dilation, one_product_per_phase=True,
                    epilogue=epilogue, product_weights=self.product_weights)


register(GemmInt8())

ON_THE_INT8_GRID = GemmInt8(product_weights=int8_grid.per_output_channel)
"""The int8 form with each product's weights on the converter's int8 grid:
what a quantization-aware layer trains through."""


def from_flags(implementation, asked, one_product_per_phase, fake_quantize_kernel):
    """The implementation that ``conv3d_transpose``'s deprecated flags ask
    for: ``implementation`` (normalised; ``asked``, as given) where neither
    is set, else this lowering, with its products' weights on the int8 grid
    for ``fake_quantize_kernel``."""
    if fake_quantize_kernel and not one_product_per_phase:
        raise ValueError("fake_quantize_kernel=True quantizes the weights of the products "
                         "one_product_per_phase=True makes; received "
                         "one_product_per_phase=False.")
    if not one_product_per_phase:
        return implementation
    warnings.warn("conv3d_transpose's one_product_per_phase and fake_quantize_kernel are "
                  "deprecated: pass implementation='gemm_int8' (or "
                  "ops.lowerings.gemm_int8.ON_THE_INT8_GRID for fake-quantized weights).",
                  DeprecationWarning, stacklevel=4)  # the op's caller, past its decorator
    gemm_lowering = get("gemm")
    pair = implementation if isinstance(implementation, tuple) else (implementation,) * 2
    if any(name not in ("auto", gemm_lowering) for name in pair):
        raise ValueError("one_product_per_phase=True is a form of the GEMM lowering. "
                         f"Received: implementation={asked!r}")
    return ON_THE_INT8_GRID if fake_quantize_kernel else get("gemm_int8")
