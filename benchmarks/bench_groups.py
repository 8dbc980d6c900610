"""Grouped and depthwise Conv3DTranspose against PyTorch's grouped conv_transpose3d.

For each configuration: forward and training step (gradients with respect to
the input and the kernel) of ``auto`` and each lowering, timed in
interleaved rounds in this process (bench_conv3d_transpose.interleaved_ms),
and PyTorch's ``conv_transpose3d(groups=g)`` timed in a child process of its
own (its OpenMP threads slow what runs next in theirs). Median ms; the
result goes to benchmarks/results/groups/<cpu>_<date>.json:

    python benchmarks/bench_groups.py
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

import tensorflow as tf

import tf_conv3dt
from tf_conv3dt.ops import choice
from bench_conv3d_transpose import interleaved_ms
from bench_onnx import cpu_model, write_result

# (name, input shape (N, D, H, W, C), filters, kernel, stride, padding, groups)
CONFIGS = [
    ("depthwise k3 s2 same", (2, 16, 16, 16, 32), 32, 3, 2, "same", 32),
    ("depthwise k2 s2", (2, 16, 16, 16, 64), 64, 2, 2, "valid", 64),
    ("groups 4 k4 s2 same", (1, 16, 16, 16, 64), 32, 4, 2, "same", 4),
    ("groups 2 k3 s1 same", (2, 12, 12, 12, 32), 32, 3, 1, "same", 2),
]
LOWERINGS = ("auto", "native", "gemm", "subpixel")


def tf_steps(shape, filters, kernel, stride, padding, groups, implementation):
    x = tf.random.uniform(shape)
    weights = tf.Variable(tf.random.normal((kernel,) * 3 + (filters // groups, shape[-1])))
    output_padding = None if padding == "valid" or kernel % 2 or stride == 1 else 1

    def call(x):
        return tf_conv3dt.conv3d_transpose(x, weights, stride, padding, output_padding,
                                           implementation=implementation, groups=groups)

    forward = tf.function(call)

    @tf.function
    def train(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(call(x))
        return tape.gradient(loss, [x, weights])

    return (lambda: forward(x).numpy()), (lambda: [g.numpy() for g in train(x)])


def torch_ms(config, repeats):
    """PyTorch's (forward, training step) ms in a child process."""
    code = f"""
import json, statistics, time, torch
name, shape, filters, kernel, stride, padding, groups = {config!r}
n, d, h, w, c = shape
x = torch.rand(n, c, d, h, w, requires_grad=True)
weight = torch.randn(c, filters // groups, kernel, kernel, kernel, requires_grad=True)
def forward():
    with torch.no_grad():
        torch.nn.functional.conv_transpose3d(x, weight, stride=stride, groups=groups)
def train():
    torch.nn.functional.conv_transpose3d(x, weight, stride=stride, groups=groups).sum().backward()
def ms(fn):
    for _ in range(3): fn()
    times = []
    for _ in range({repeats}):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3
print(json.dumps([ms(forward), ms(train)]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "groups"))
    args = parser.parse_args()
    rows = []
    print(f"{'configuration':<24} {'path':<10} {'fwd ms':>8} {'train ms':>9}")
    for config in CONFIGS:
        name, *arguments = config
        fns = {}
        for lowering in LOWERINGS:
            forward, train = tf_steps(*arguments, lowering)
            fns[f"{lowering} forward"], fns[f"{lowering} train"] = forward, train
        ms = interleaved_ms(fns, args.repeats)
        torch_forward, torch_train = torch_ms(config, args.repeats)
        row = {"configuration": name, "input_shape": list(arguments[0]), "filters": arguments[1],
               "kernel": arguments[2], "stride": arguments[3], "padding": arguments[4],
               "groups": arguments[5], "torch": {"forward_ms": torch_forward,
                                                 "train_ms": torch_train}}
        for lowering in LOWERINGS:
            row[lowering] = {"forward_ms": ms.get(f"{lowering} forward"),
                             "train_ms": ms.get(f"{lowering} train")}
        rows.append(row)
        for path in (*LOWERINGS, "torch"):
            f, t = row[path]["forward_ms"], row[path]["train_ms"]
            print(f"{name:<24} {path:<10} {f or float('nan'):8.2f} {t or float('nan'):9.2f}",
                  flush=True)
    cpu = cpu_model()
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu, "isa": choice.cpu_isa(),
              "cores": os.cpu_count(),
              "tensorflow": tf.__version__, "repeats": args.repeats,
              "environment": {k: v for k, v in os.environ.items()
                              if k.startswith(("TF_ENABLE_ONEDNN", "ONEDNN", "OPENBLAS"))},
              "rows": rows}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
