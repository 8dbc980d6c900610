"""What the op reads of the machine: the CPU's model and ISA class, oneDNN, a GPU."""

import functools
import os
import platform

import tensorflow as tf

# The ISA classes oneDNN's kernels are written for, widest first: a class with
# no measured rule takes the next narrower one's (its CPUs run that code too).
ISA_LADDER = ("amx", "avx512", "avx2")

# ONEDNN_MAX_CPU_ISA's values, by the class they cap oneDNN at.
_ONEDNN_CAPS = (("AVX512_CORE_AMX", "amx"), ("AVX512", "avx512"), ("AVX2", "avx2"))


def cpu_configuration():
    """"onednn" where TensorFlow runs its oneDNN CPU kernels (by default on
    CPUs with AVX512_VNNI/BF16 or AMX, or with TF_ENABLE_ONEDNN_OPTS=1),
    "eigen" otherwise."""
    return "onednn" if onednn_enabled() else "eigen"


def onednn_enabled():
    try:  # TensorFlow's own test helper reads the same flag (test_util.IsMklEnabled).
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def on_a_gpu():
    """Whether TensorFlow places ops on a GPU here (what "auto" decides by first)."""
    return bool(tf.config.list_logical_devices("GPU"))


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


def cpu_family():
    """``(family, model)`` as the OS reports them, which tell apart CPUs of
    one model name (two AMD EPYC generations), or None where it does not."""
    info = _cpuinfo()
    try:
        return int(info["cpu family"]), int(info["model"])
    except (KeyError, ValueError):
        return None


def flags_isa():
    """The widest vector class the CPU's flags name ("amx", "avx512", "avx2"
    or "other"), whatever a cap or ``TF_CONV3DT_CPU_ISA`` holds a run to:
    what the machine is."""
    flags = set(_cpuinfo().get("flags", "").split())
    return next((isa for isa, needed in (("amx", "amx_tile"), ("avx512", "avx512f"),
                                         ("avx2", "avx2")) if needed in flags), "other")


def int8_dot_products():
    """The CPU's int8 dot-product instructions: "amx" (AMX-INT8), "vnni"
    (AVX512_VNNI or AVX-VNNI), or "none", where u8 x i8 products are summed
    in 16 bits (VPMADDUBSW) and int8 gains little over float32."""
    flags = set(_cpuinfo().get("flags", "").split())
    if "amx_int8" in flags:
        return "amx"
    return "vnni" if flags & {"avx512_vnni", "avx_vnni"} else "none"


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
        isa = flags_isa()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").strip().upper()
    if cap in ("", "ALL", "DEFAULT"):
        return isa
    capped = next((name for prefix, name in _ONEDNN_CAPS if cap.startswith(prefix)), "other")
    return max(isa, capped, key=classes.index)
