"""Which lowering a call runs: forced_implementation, the "auto" rule and the CPU probe."""

import contextlib
import contextvars
import functools
import platform

import tensorflow as tf

from tf_conv3dt import shapes


# (implementation, one_product_per_phase) while forced_implementation is active.
_FORCED = contextvars.ContextVar("tf_conv3dt_forced_implementation", default=None)


@contextlib.contextmanager
def forced_implementation(implementation, one_product_per_phase=False):
    """Traces every transposed convolution in the block with ``implementation``
    (and, for "gemm", ``one_product_per_phase``, see :func:`conv3d_transpose`).

    Export uses it to put one lowering into an artifact whatever each layer
    was configured with: the GEMM lowering for TFLite (integer kernels exist
    for matmul, not for CONV_3D_TRANSPOSE) and for SavedModels that may be
    served on CPUs without oneDNN. "auto" lets each call choose again.
    """
    implementation = shapes.normalize_choice(implementation, "implementation",
                                             shapes.IMPLEMENTATIONS)
    token = _FORCED.set(None if implementation == "auto"
                        else (implementation, bool(one_product_per_phase)))
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced():
    """The active forced (implementation, one_product_per_phase), or None."""
    return _FORCED.get()


def forced_or(implementation):
    """The forced (implementation, one_product_per_phase), else ``(implementation, False)``."""
    implementation = shapes.normalize_choice(implementation, "implementation",
                                             shapes.IMPLEMENTATIONS)
    return forced() or (implementation, False)


# What "auto" takes on a CPU: the lowering fastest over forward and training step,
# per CPU configuration and kernel/stride relation (:func:`kernel_relation`),
# as benchmarks/derive_auto_rule.py derives it from the benchmark runs kept in
# benchmarks/results/ (a test checks this table against them).
AUTO_RULE = {
    "onednn": {"kernel < stride": "native", "kernel == stride": "gemm",
               "stride 1": "native", "overlapping": "native"},
    "eigen": {"kernel < stride": "gemm", "kernel == stride": "subpixel",
              "stride 1": "subpixel", "overlapping": "subpixel"},
}


def kernel_relation(kernel_size, strides):
    """The class of a kernel/stride pair that :data:`AUTO_RULE` is keyed by:
    "kernel < stride" on some axis (phases without taps), "kernel == stride"
    on every axis (no tap overlaps another), "stride 1" (dilated or not), or
    "overlapping" (strided, some kernel longer than its stride)."""
    if any(k < s for k, s in zip(kernel_size, strides)):
        return "kernel < stride"
    if tuple(kernel_size) == tuple(strides):
        return "kernel == stride"
    if all(s == 1 for s in strides):
        return "stride 1"
    return "overlapping"


def cpu_configuration():
    """"onednn" where TensorFlow runs its oneDNN CPU kernels (by default on
    CPUs with AVX512_VNNI/BF16 or AMX, or with TF_ENABLE_ONEDNN_OPTS=1),
    "eigen" otherwise."""
    return "onednn" if onednn_enabled() else "eigen"


def resolve_implementation(implementation, kernel_size, strides):
    """The lowering a call with this kernel size and stride runs.

    ``forced_implementation`` wins, then an explicit choice. "auto" takes the
    native op on a GPU (cuDNN; not measured here yet) and on a CPU follows
    :data:`AUTO_RULE`, which needs only the kernel size and strides: it is
    decided at trace time whatever the batch and spatial sizes (known or not).
    Without oneDNN the native op falls back to Eigen's Conv3DBackprop*
    kernels, 30-100x slower at batch > 1, so the rule never takes it there.
    Beyond ``shapes.MAX_UNROLLED`` stride phases or kernel taps "auto" takes
    the native op, and an explicit "gemm" or "subpixel" is refused.
    """
    return resolve(forced_or(implementation)[0], kernel_size, strides)


def resolve(implementation, kernel_size, strides):
    """:func:`resolve_implementation` for a normalized, already forced choice."""
    if implementation == "auto":
        if tf.config.list_logical_devices("GPU"):
            return "native"
        if shapes.unrolled_excess(kernel_size, strides):
            return "native"
        return AUTO_RULE[cpu_configuration()][kernel_relation(kernel_size, strides)]
    if implementation != "native":
        shapes.check_unrolled(kernel_size, strides, implementation)
    return implementation


@functools.lru_cache(maxsize=None)
def _cpuinfo():
    """``/proc/cpuinfo``'s first processor as {field: value}, or {} where there is none."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n", 1)[0]
    except OSError:
        return {}
    return dict((k.strip(), v.strip()) for k, _, v in
                (line.partition(":") for line in text.splitlines()) if k.strip())


def cpu_model():
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) ..."), as the OS reports it."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_isa():
    """The CPU's widest vector class TensorFlow's kernels use: "amx", "avx512",
    "avx2" or "other" (from /proc/cpuinfo's flags; "other" where it is absent)."""
    flags = set(_cpuinfo().get("flags", "").split())
    for isa, needed in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if needed in flags:
            return isa
    return "other"


def onednn_enabled():
    try:  # TensorFlow's own test helper reads the same flag (test_util.IsMklEnabled).
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())
