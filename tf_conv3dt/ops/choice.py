"""Which lowering a call runs: forced_implementation, the "auto" rule and the CPU probe."""

import contextlib
import contextvars
import functools
import os
import platform

import tensorflow as tf

from tf_conv3dt import shapes


# (implementation, one_product_per_phase) while forced_implementation is active.
_FORCED = contextvars.ContextVar("tf_conv3dt_forced_implementation", default=None)
_DEPTHWISE_AS_GEMM = contextvars.ContextVar("tf_conv3dt_depthwise_as_gemm", default=False)


@contextlib.contextmanager
def forced_implementation(implementation, one_product_per_phase=False,
                          depthwise_as_gemm=False):
    """Traces every transposed convolution in the block with ``implementation``
    (and, for "gemm", ``one_product_per_phase``, see :func:`conv3d_transpose`);
    ``depthwise_as_gemm``: depthwise calls run GEMM's one call instead, where
    GEMM's float form runs them (not with ``one_product_per_phase``, nor
    beyond ``shapes.MAX_UNROLLED`` taps).

    Export uses it to put one lowering into an artifact whatever each layer
    was configured with: the GEMM lowering for TFLite (integer kernels exist
    for matmul, not for CONV_3D_TRANSPOSE), and for SavedModels, which may be
    served on CPUs of any kind, the sub-pixel lowering with depthwise layers
    as GEMM's one call (the forward pass fastest at worst on each, measured
    in docs/performance.md). "auto" lets each call choose again.
    """
    implementation = shapes.normalize_choice(implementation, "implementation",
                                             shapes.IMPLEMENTATIONS)
    token = _FORCED.set(None if implementation == "auto"
                        else (implementation, bool(one_product_per_phase)))
    depthwise_token = _DEPTHWISE_AS_GEMM.set(bool(depthwise_as_gemm))
    try:
        yield
    finally:
        _DEPTHWISE_AS_GEMM.reset(depthwise_token)
        _FORCED.reset(token)


def forced():
    """The active forced (implementation, one_product_per_phase), or None."""
    return _FORCED.get()


def depthwise_forced_to_gemm():
    """Whether the active forced_implementation runs depthwise calls as GEMM's one call."""
    return _DEPTHWISE_AS_GEMM.get()


def forced_or(implementation):
    """The forced (implementation, one_product_per_phase), else ``(implementation, False)``."""
    implementation = shapes.normalize_choice(implementation, "implementation",
                                             shapes.IMPLEMENTATIONS)
    return forced() or (implementation, False)


# What "auto" takes on a CPU: the lowering fastest over forward and training step,
# per CPU class (:func:`rule_key`) and kernel/stride relation (:func:`kernel_relation`),
# as benchmarks/derive_auto_rule.py derives it from the benchmark runs kept in
# benchmarks/results/ (a test checks this table against them).
AUTO_RULE = {
    "eigen": {"kernel < stride": "gemm", "kernel == stride": "subpixel",
              "stride 1": "subpixel", "overlapping": "subpixel"},
    "onednn avx2": {"kernel < stride": "native", "kernel == stride": "gemm",
                    "stride 1": "native", "overlapping": "native"},
    "onednn avx512": {"kernel < stride": "gemm", "kernel == stride": "subpixel",
                      "stride 1": "native", "overlapping": "native"},
    "onednn avx512 bfloat16": {"kernel < stride": "gemm", "kernel == stride": "subpixel",
                               "stride 1": "native", "overlapping": "native"},
    "onednn amx": {"kernel < stride": "gemm", "kernel == stride": "gemm",
                   "stride 1": "native", "overlapping": "native"},
    "onednn amx bfloat16": {"kernel < stride": "gemm", "kernel == stride": "subpixel",
                            "stride 1": "native", "overlapping": "native"},
}

# The ISA classes oneDNN's kernels are written for, widest first: a class with
# no measured rule takes the next narrower one's (its CPUs run that code too).
ISA_LADDER = ("amx", "avx512", "avx2")


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


def measured_key(configuration, isa, dtype="float32"):
    """The :data:`AUTO_RULE` key a benchmark run measures: "eigen", else
    "onednn ISA", with the dtype's name after it unless it is float32."""
    if configuration == "eigen":
        return "eigen"
    return f"onednn {isa}" + ("" if dtype == "float32" else f" {dtype}")


def rule_key(dtype=tf.float32):
    """The :data:`AUTO_RULE` entry for a call of this compute dtype here.

    Eigen's kernels are the same code on every x86 CPU: "eigen". Under oneDNN
    the key names the ISA class oneDNN runs (:func:`cpu_isa`), falling back
    down :data:`ISA_LADDER` to the widest class measured, and then the dtype
    where that class has a rule of its own for it (e.g. "onednn avx512
    bfloat16"); other dtypes take the class's float32 rule.
    """
    if cpu_configuration() == "eigen":
        return "eigen"
    isa = cpu_isa()
    ladder = ISA_LADDER[ISA_LADDER.index(isa):] if isa in ISA_LADDER else ()
    isa = next((name for name in ladder if measured_key("onednn", name) in AUTO_RULE), "avx2")
    specific = measured_key("onednn", isa, tf.as_dtype(dtype).name)
    return specific if specific in AUTO_RULE else measured_key("onednn", isa)


def on_a_gpu():
    """Whether TensorFlow places ops on a GPU here (what "auto" decides by first)."""
    return bool(tf.config.list_logical_devices("GPU"))


def resolve_implementation(implementation, kernel_size, strides, dtype=tf.float32):
    """The lowering a call with this kernel size, stride and compute dtype runs.

    ``forced_implementation`` wins, then an explicit choice. "auto" takes the
    native op on a GPU (cuDNN; not measured here yet) and on a CPU follows
    :data:`AUTO_RULE` at :func:`rule_key`, which needs only the kernel size,
    strides and dtype: it is decided at trace time whatever the batch and
    spatial sizes (known or not).
    Without oneDNN the native op falls back to Eigen's Conv3DBackprop*
    kernels, 30-100x slower at batch > 1, so the rule never takes it there.
    Beyond ``shapes.MAX_UNROLLED`` stride phases or kernel taps "auto" takes
    the native op, and an explicit "gemm" or "subpixel" is refused.
    """
    return resolve(forced_or(implementation)[0], kernel_size, strides, dtype)


def resolve(implementation, kernel_size, strides, dtype=tf.float32):
    """:func:`resolve_implementation` for a normalized, already forced choice."""
    if implementation == "auto":
        if on_a_gpu():
            return "native"
        if shapes.unrolled_excess(kernel_size, strides):
            return "native"
        return AUTO_RULE[rule_key(dtype)][kernel_relation(kernel_size, strides)]
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


# ONEDNN_MAX_CPU_ISA's values, by the class they cap oneDNN at.
_ONEDNN_CAPS = (("AVX512_CORE_AMX", "amx"), ("AVX512", "avx512"), ("AVX2", "avx2"))


# Names the ISA class the rule and tuning assume, instead of the one the CPU's
# flags give: to trace a graph here for CPUs of another class, and for tests.
ENV_CPU_ISA = "TF_CONV3DT_CPU_ISA"


def cpu_isa():
    """The widest vector class oneDNN's kernels use here: "amx", "avx512",
    "avx2" or "other", from /proc/cpuinfo's flags ("other" where it is
    absent) unless ``TF_CONV3DT_CPU_ISA`` names one, capped by
    ``ONEDNN_MAX_CPU_ISA`` where that is set."""
    classes = (*ISA_LADDER, "other")
    named = os.environ.get(ENV_CPU_ISA, "")
    if named.strip():
        isa = named.strip().lower()
        if isa not in classes:
            raise ValueError(f"{ENV_CPU_ISA} must be one of {', '.join(classes)}. "
                             f"Received: {ENV_CPU_ISA}={named!r}")
    else:
        flags = set(_cpuinfo().get("flags", "").split())
        isa = next((isa for isa, needed in (("amx", "amx_tile"), ("avx512", "avx512f"),
                                            ("avx2", "avx2")) if needed in flags), "other")
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return isa
    capped = next((name for prefix, name in _ONEDNN_CAPS if cap.startswith(prefix)), "other")
    return max(isa, capped, key=classes.index)


def onednn_enabled():
    try:  # TensorFlow's own test helper reads the same flag (test_util.IsMklEnabled).
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())
