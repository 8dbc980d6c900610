"""The lowerings the numerical tests run, by name, each as a scope and an implementation."""

import contextlib

from tf_conv3dt import ops

# "gemm-phase-products" is the GEMM lowering with one product per stride
# phase, the form int8 TFLite uses; the other names are implementations.
LOWERINGS = ("native", "gemm", "gemm-phase-products", "subpixel")
# One lowering's forward pass with another's gradient, named "forward+gradient"
# (what tuned "auto" runs where they differ): each lowering once in each role.
SPLITS = ("subpixel+native", "native+gemm", "gemm+subpixel")


def lowering(name):
    """``(scope, implementation)``: trace inside ``scope`` with ``implementation``
    to run the lowering ``name``."""
    if name == "gemm-phase-products":
        return ops.forced_implementation("gemm", one_product_per_phase=True), "gemm"
    if "+" in name:
        return contextlib.nullcontext(), tuple(name.split("+"))
    return contextlib.nullcontext(), name
