"""The lowerings the numerical tests run: every registered one, and pairs of them."""

from tf_conv3dt.ops import lowerings


def names():
    """Every registered lowering, read now: one a test registers (a fixture
    of its own) joins every list made while it is registered."""
    return lowerings.names()


# The built-in lowerings, as the tests are collected (parametrized by name).
LOWERINGS = names()
# One lowering's forward pass with another's gradient, named "forward+gradient"
# (what tuned "auto" runs where they differ): each lowering "auto" may pick
# once in each role.
SPLITS = ("subpixel+native", "native+gemm", "gemm+subpixel")


def implementation(name):
    """What ``implementation=`` takes to run the lowering or pair ``name``."""
    return tuple(name.split("+")) if "+" in name else name
