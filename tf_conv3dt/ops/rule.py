"""The static rule "auto" follows where it does not time, by CPU class and kernel/stride relation."""

import tensorflow as tf

from tf_conv3dt.ops import cpu

# What "auto" takes on a CPU: the lowering fastest over forward and training step,
# per CPU class (:func:`rule_key`) and kernel/stride relation (:func:`kernel_relation`),
# as benchmarks/derive_auto_rule.py derives it from the benchmark runs it lists
# (RULE_RUNS, in benchmarks/results/conv3d_transpose/; a test checks this table
# against them).
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


# The kernel/stride classes, as kernel_relation names them.
RELATIONS = ("kernel < stride", "kernel == stride", "stride 1", "overlapping")


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


def measured_key(configuration, isa, dtype="float32"):
    """The :data:`AUTO_RULE` key a benchmark run measures: "eigen", else
    "onednn ISA", with the dtype's name after it unless it is float32."""
    if configuration == "eigen":
        return "eigen"
    return f"onednn {isa}" + ("" if dtype == "float32" else f" {dtype}")


def rule_key(dtype=tf.float32):
    """The :data:`AUTO_RULE` entry for a call of this compute dtype here.

    Eigen's kernels are the same code on every x86 CPU: "eigen". Under oneDNN
    the key names the ISA class oneDNN runs (``cpu.cpu_isa``), falling back
    down ``cpu.ISA_LADDER`` to the widest class measured, and then the dtype
    where that class has a rule of its own for it (e.g. "onednn avx512
    bfloat16"); other dtypes take the class's float32 rule.
    """
    if cpu.cpu_configuration() == "eigen":
        return "eigen"
    isa = cpu.cpu_isa()
    ladder = cpu.ISA_LADDER[cpu.ISA_LADDER.index(isa):] if isa in cpu.ISA_LADDER else ()
    isa = next((name for name in ladder if measured_key("onednn", name) in AUTO_RULE), "avx2")
    specific = measured_key("onednn", isa, tf.as_dtype(dtype).name)
    return specific if specific in AUTO_RULE else measured_key("onednn", isa)
