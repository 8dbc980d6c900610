"""auto's CPU rule is what the kept benchmark runs say it should be."""

import glob
import os

import pytest

import cpu_pin
from benchmarks import common
from benchmarks import derive_auto_rule as derive
from markers import cpu_sensitive
from tf_conv3dt import ops


def test_rule_table_is_derived_from_the_kept_benchmark_runs():
    runs = derive.load_runs(derive.RULE_RUNS)
    assert {derive.rule_key(run) for run in runs} == set(ops.AUTO_RULE)
    assert derive.derive(runs) == ops.AUTO_RULE
    # Runs of CPUs of three ISA classes: an AVX2-only EPYC, AVX-512 EPYCs and
    # an Intel Xeon with AMX.
    assert {run.get("isa", "avx2") for run in runs} >= {"avx2", "avx512", "amx"}


@cpu_sensitive
@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_depthwise_layers_take_gemm_in_one_call_on_a_cpu(monkeypatch, gpu):
    """The depthwise rule, from the kept groups runs: where every kept result
    file has GEMM ahead of every other lowering over forward and training
    step together for each depthwise case, a depthwise call on a CPU traces
    GEMM's one call (its broadcast products, no split by channel) and no
    convolution, tuned or not. On a GPU, not measured, "auto" takes the
    native op per channel."""
    import json

    import tensorflow as tf

    paths = glob.glob(os.path.join(common.RESULTS, "groups", "*.json"))
    assert len(paths) >= 2, paths
    for path in paths:
        with open(path) as f:
            rows = [row for row in json.load(f)["rows"]
                    if row["groups"] == row["input_shape"][-1]]

        def both(row, lowering):
            return row[lowering]["forward_ms"] + row[lowering]["train_ms"]

        assert rows and all(both(row, "gemm") < both(row, other) for row in rows
                            for other in ("native", "subpixel")), path

    cpu_pin.pin(monkeypatch, gpu=gpu)
    kernel = tf.zeros((3, 3, 3, 2, 4))
    traced = tf.function(lambda x: ops.conv3d_transpose(x, kernel, 2, "same", 1, groups=4))
    graph = traced.get_concrete_function(tf.TensorSpec((1, 3, 3, 3, 4))).graph
    types = {op.type for op in graph.get_operations()}
    if gpu:
        assert "Conv3DBackpropInputV2" in types, types
        return
    assert not any(t.startswith("Conv3D") for t in types), types
    assert "Mul" in types and not types & {"Split", "SplitV"}, types
