"""The lowerings: the common interface every way of computing the op has, and the registry of them.

Each lowering is a module that defines a :class:`Lowering` and registers
one instance (:func:`register`). Everything that lists lowerings reads the
registry: the choice (``ops.select``), tuning's candidates, the export
command's ``--implementation`` choices, the tests and the benchmarks.
"""

import contextlib

import tensorflow as tf


class Lowering:
    """One exact way to compute ``conv3d_transpose``, on NDHWC data.

    A subclass names itself and says what it can do; the op asks it, and
    never its name, what it may do with a call (``ops.call.Call``).
    """

    name = None
    """What ``implementation=`` and ``forced_implementation`` call it."""
    auto = True
    """Whether "auto", by its rule or by timing, may pick it."""
    fuses_epilogue = False
    """Whether :meth:`forward` may apply the bias and activation itself."""
    keeps_its_calls = False
    """Whether a call that names it keeps it inside ``forced_implementation``
    (its numerics are the caller's own, such as a quantized layer's)."""
    runs_depthwise_in_one_call = False
    """Whether it runs a depthwise call (one group per channel) as one call,
    rather than one call per group."""

    def refuses(self, call):
        """Why it cannot run ``call``, as an error message naming the argument
        and the value, or None where it can."""
        return None

    def forward(self, x, kernel, plan, call, epilogue=None):
        """The output for NDHWC ``x``, the kernel and the call's ``plan``
        (``ops.plan.Plan``), and whether it applied ``epilogue`` (bias and
        activation; given only where :attr:`fuses_epilogue`)."""
        raise NotImplementedError

    def gradient(self, x, kernel, plan, call, upstream):
        """``(input gradient, kernel gradient)`` for the gradient ``upstream``
        of the output: what its forward's autodiff gives (its own custom
        gradients included). Another lowering's forward may run with it
        (``ops.split``): every lowering computes the same function."""
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y, _ = self.forward(x, kernel, plan, call)
        return tape.gradient(y, [x, kernel], output_gradients=upstream,
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def rerouted(self, call):
        """``(lowering name, why)`` where TensorFlow's kernels would compute
        ``call`` wrongly through this lowering and another must run it instead,
        else None."""
        return None

    def untimed(self, call):
        """Why tuning does not time it for ``call`` on this machine, or None."""
        return None

    def ranked_on_a_block(self, call):
        """Whether its gradient, timed on a block of the call's input
        (``tuning.measure.timed_shape``), ranks it as at the whole size."""
        return True

    def memory(self, call):
        """The peak bytes a training step of ``call`` holds beyond what was
        resident before it (its output, the gradients and every temporary;
        ``Call.sizes``), estimated; None where a size is unknown at trace
        time, or the lowering has no model. What ``ops.budget`` compares
        with the budget."""
        return None

    def __repr__(self):
        return f"<lowering {self.name!r}>"


_REGISTRY = {}


def register(lowering):
    """Adds ``lowering`` (a :class:`Lowering`) under its name; a name already
    registered, or "auto", is refused."""
    if not isinstance(lowering, Lowering) or not isinstance(lowering.name, str):
        raise TypeError(f"register takes a Lowering with a name. Received: {lowering!r}")
    if lowering.name == "auto" or lowering.name in _REGISTRY:
        raise ValueError(f"A lowering named {lowering.name!r} is already registered "
                         "(or is 'auto').")
    _REGISTRY[lowering.name] = lowering
    return lowering


def unregister(name):
    """Removes the lowering ``name`` registered."""
    del _REGISTRY[name]


@contextlib.contextmanager
def registered(lowering):
    """``lowering`` registered for the block, then removed."""
    register(lowering)
    try:
        yield lowering
    finally:
        unregister(lowering.name)


def names(auto=False):
    """The registered lowerings' names, in registration order (``auto``:
    only those "auto" may pick)."""
    return tuple(name for name, lowering in _REGISTRY.items() if lowering.auto or not auto)


def implementations():
    """What ``implementation=`` takes by name: "auto" and each lowering."""
    return ("auto", *names())


def get(name):
    """The lowering registered as ``name``."""
    return _REGISTRY[name]


# The built-in lowerings register themselves on import, in this order.
from tf_conv3dt.ops.lowerings import native, gemm, gemm_int8, subpixel  # noqa: E402,F401
