"""What building the GEMM lowering's training graph costs: ops, trace and first-run time.

For each configuration: the per-tap GEMM form's forward and both gradients
(input and kernel) traced with only the batch unknown, as in a Keras model:
the graph's op count, the seconds to trace it, the seconds of its first run
(TensorFlow's graph optimisation) and the median ms of a step after that.
``--run`` names the run inside the day's result file,
results/gemm_trace/<cpu id>_<date>.json (``common.result_path``), so that two
source trees (run with ``PYTHONPATH`` pointing at each, one after the other)
compare in one file:

    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/bench_gemm_trace.py --run after
"""

import argparse
import json
import os
import time

import numpy as np
import tensorflow as tf

import tf_conv3dt

import common

# (kernel, strides, padding, in channels, filters, spatial), batch 2
CONFIGS = [
    ((3, 3, 3), (2, 2, 2), "same", 8, 8, (8, 8, 8)),
    ((3, 3, 3), (1, 1, 1), "same", 16, 16, (12, 12, 12)),
    ((4, 4, 4), (2, 2, 2), "same", 8, 4, (10, 10, 10)),
    ((5, 3, 1), (2, 1, 3), "valid", 3, 2, (5, 6, 7)),
]


def measure(kernel_size, strides, padding, channels, filters, spatial, repeats):
    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(size=(*kernel_size, filters, channels)), tf.float32)
    x = tf.constant(rng.normal(size=(2, *spatial, channels)), tf.float32)

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = tf_conv3dt.conv3d_transpose(x, kernel, strides, padding, implementation="gemm")
            loss = tf.reduce_sum(y * y)
        return y, tape.gradient(loss, [x, kernel])

    start = time.perf_counter()
    concrete = step.get_concrete_function(tf.TensorSpec([None, *spatial, channels]),
                                          tf.TensorSpec(kernel.shape))
    trace_s = time.perf_counter() - start
    start = time.perf_counter()
    step(x, kernel)
    first_s = time.perf_counter() - start
    steps = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x, kernel)
        steps.append(time.perf_counter() - start)
    return {"config": f"k{kernel_size} s{strides} {padding} C{channels} F{filters} n{spatial}",
            "ops": len(concrete.graph.get_operations()), "trace_s": round(trace_s, 3),
            "first_run_s": round(first_s, 3), "step_ms": round(1e3 * float(np.median(steps)), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run's name in the result file")
    parser.add_argument("--repeats", type=int, default=15)
    common.add_result_arguments(parser, "gemm_trace")
    args = parser.parse_args()
    rows = []
    for config in CONFIGS:
        rows.append(measure(*config, args.repeats))
        print(rows[-1], flush=True)
    path = common.result_path(args.out, args.label)
    result = dict(common.run_record(), runs={})
    if os.path.exists(path):  # another run of the day
        with open(path) as f:
            result = json.load(f)
    result["runs"][args.run] = {"environment": common.kernel_environment(), "rows": rows}
    common.write_result(result, path, merged=True)


if __name__ == "__main__":
    main()
