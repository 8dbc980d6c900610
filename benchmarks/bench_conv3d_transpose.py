"""Forward and training-step timings of 3-D transposed convolutions on this machine.

Prints one table (and writes it as JSON with --json): tf_conv3dt with
implementation "auto", "native" and "gemm", keras.layers.Conv3DTranspose, and
torch.nn.functional.conv_transpose3d when torch is installed. For each case
and each path: median milliseconds, GFLOP/s, percent of the NumPy sgemm
GFLOP/s measured in the same run, and the peak extra resident memory.

Usage: python benchmarks/bench_conv3d_transpose.py [--repeats 20] [--json out.json]
       [--cases 0 2] [--policy mixed_float16] [--data-format channels_first]
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt._keras import keras

try:
    import torch
except ImportError:  # an optional extra: tf_conv3dt[bench]
    torch = None

# (input shape NDHWC, filters, kernel, stride, padding)
CASES = [
    ((4, 10, 8, 12, 128), 32, 2, 2, "valid"),
    ((1, 16, 16, 16, 256), 128, 2, 2, "valid"),
    ((1, 32, 32, 32, 64), 32, 3, 2, "same"),
    ((2, 16, 16, 16, 32), 32, 3, 1, "same"),
    ((1, 16, 16, 16, 64), 32, 4, 2, "same"),
    # A kernel shorter than its stride with "same": the native path runs it as
    # "valid" plus a crop (Eigen's gradient is wrong otherwise); the built-in
    # layer shows the unrouted op.
    ((2, 16, 16, 16, 64), 32, 1, 2, "same"),
]


def forward_flops(shape, filters, kernel):
    """2 * (input voxels) * C_in * taps * filters: every multiply-add of the op."""
    batch, d, h, w, channels = shape
    return 2 * batch * d * h * w * channels * kernel ** 3 * filters


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def sgemm_gflops(size=2048, repeats=5):
    a = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    a @ a
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ a
        times.append(time.perf_counter() - start)
    return 2 * size ** 3 / statistics.median(times) / 1e9


class PeakMemory:
    """Peak resident-set growth during a block (Linux: clear_refs resets VmHWM)."""

    @staticmethod
    def _status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        return 0

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.available = True
        except OSError:
            self.available = False
        self.before = self._status("VmRSS:")
        return self

    def __exit__(self, *exc):
        # Allocators keep freed memory, so growth can be less than the work's
        # true footprint: read it as a lower bound.
        self.peak = max(self._status("VmHWM:") - self.before, 0) if self.available else None


def _mib(size):
    return None if size is None else max(size, 0) / 2 ** 20


def median_ms(fn, repeats, warmup=5):
    for _ in range(warmup):  # trace, then let allocators and thread pools settle
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def tf_paths(shape, filters, kernel, stride, padding, data_format="channels_last"):
    if data_format == "channels_first":
        shape = (shape[0], shape[4], *shape[1:4])
    x = tf.random.normal(shape)
    paths = {}
    for name, implementation in (("tf_conv3dt auto", "auto"), ("tf_conv3dt native", "native"),
                                 ("tf_conv3dt gemm", "gemm")):
        layer = tf_conv3dt.Conv3DTranspose(filters, kernel, stride, padding=padding,
                                           data_format=data_format,
                                           implementation=implementation)
        layer.build(shape)
        paths[name] = layer
    builtin = keras.layers.Conv3DTranspose(filters, kernel, stride, padding=padding,
                                           data_format=data_format)
    builtin.build(shape)
    paths["keras Conv3DTranspose"] = builtin
    timed = {}
    for name, layer in paths.items():
        forward = tf.function(lambda x, layer=layer: layer(x))

        @tf.function
        def train_step(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, layer.kernel])

        timed[name] = (lambda f=forward: f(x).numpy(),
                       lambda f=train_step: [g.numpy() for g in f(x)])
    return timed


def torch_paths(shape, filters, kernel, stride, padding):
    if torch is None:
        return {}
    torch.set_num_threads(os.cpu_count())
    batch, d, h, w, channels = shape
    x = torch.randn(batch, channels, d, h, w)
    weight = torch.randn(channels, filters, kernel, kernel, kernel) * 0.05
    # PyTorch's padding p crops p from both sides; Keras "same" with this
    # case's odd or even kernel matches p = (k - s + 1) // 2 and output_padding.
    if padding == "same":
        pad = (kernel - stride + 1) // 2
        out_pad = stride * d - ((d - 1) * stride - 2 * pad + kernel)
    else:
        pad, out_pad = 0, 0

    def forward():
        with torch.no_grad():
            return torch.nn.functional.conv_transpose3d(
                x, weight, stride=stride, padding=pad, output_padding=out_pad)

    xg = x.clone().requires_grad_(True)
    wg = weight.clone().requires_grad_(True)

    def train_step():
        y = torch.nn.functional.conv_transpose3d(xg, wg, stride=stride, padding=pad,
                                                 output_padding=out_pad)
        (y * y).sum().backward()
        xg.grad = None
        wg.grad = None

    return {"torch conv_transpose3d": (forward, train_step)}


# Scaling of "auto": (1, 16^3) to (8, 16^3) and (1, 16^3) to (1, 48^3) inputs.
SCALING_CASE = dict(channels=64, filters=32, kernel=3, stride=2, padding="same")
SCALING_INPUTS = [(1, 16), (2, 16), (4, 16), (8, 16), (1, 32), (1, 48)]


def scaling(repeats):
    """Forward time per output voxel and peak memory against the output size."""
    c = SCALING_CASE
    print(f"\nscaling of tf_conv3dt auto, {c['channels']}->{c['filters']} "
          f"k{c['kernel']} s{c['stride']} {c['padding']}:")
    print(f"{'input':<22} {'fwd ms':>9} {'ns/output voxel':>16} {'peak / output size':>19}")
    rows = []
    for batch, size in SCALING_INPUTS:
        shape = (batch, size, size, size, c["channels"])
        layer = tf_conv3dt.Conv3DTranspose(c["filters"], c["kernel"], c["stride"],
                                           padding=c["padding"])
        layer.build(shape)
        x = tf.random.normal(shape)
        forward = tf.function(lambda x, layer=layer: layer(x))
        voxels = batch * (size * c["stride"]) ** 3
        output_bytes = voxels * c["filters"] * 4
        with PeakMemory() as memory:
            ms = median_ms(lambda: forward(x).numpy(), max(repeats // 2, 3))
        row = dict(batch=batch, size=size, forward_ms=ms, ns_per_voxel=ms * 1e6 / voxels,
                   peak_over_output=None if memory.peak is None else memory.peak / output_bytes)
        rows.append(row)
        ratio = "n/a" if row["peak_over_output"] is None else f"{row['peak_over_output']:.2f}x"
        print(f"{str(shape):<22} {ms:9.2f} {row['ns_per_voxel']:16.2f} {ratio:>19}", flush=True)
    per_voxel = [r["ns_per_voxel"] for r in rows]
    print(f"time per output voxel, slowest / fastest: {max(per_voxel) / min(per_voxel):.2f}x")
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--cases", type=int, nargs="*", help="indices into CASES (default all)")
    parser.add_argument("--policy", default="float32",
                        help="Keras dtype policy of the TensorFlow paths, e.g. mixed_float16")
    parser.add_argument("--data-format", default="channels_last",
                        choices=["channels_last", "channels_first"],
                        help="data format of the TensorFlow paths (PyTorch's is NCDHW)")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.policy)

    peak = sgemm_gflops()
    print(f"{_cpu_name()}, {os.cpu_count()} cores, TensorFlow {tf.__version__} "
          f"(oneDNN {'on' if tf_conv3dt.ops._onednn_enabled() else 'off'}, "
          f"auto -> {tf_conv3dt.ops.resolve_implementation('auto')}), "
          f"Keras {keras.__version__}, {args.policy}, {args.data_format}, "
          f"{'GPU' if tf.config.list_logical_devices('GPU') else 'CPU'}"
          + (f", torch {torch.__version__}" if torch else ", torch not installed"))
    print(f"numpy sgemm: {peak:.1f} GFLOP/s")
    header = (f"{'case':<34} {'path':<24} {'fwd ms':>9} {'GFLOP/s':>8} {'%sgemm':>7} "
              f"{'train ms':>9} {'GFLOP/s':>8} {'peak MiB fwd/train':>19}")
    print(header)
    print("-" * len(header))
    rows = []
    for position, index in enumerate(args.cases if args.cases is not None
                                     else range(len(CASES))):
        shape, filters, kernel, stride, padding = CASES[index]
        label = f"{shape}->{filters} k{kernel} s{stride} {padding}"
        flops = forward_flops(shape, filters, kernel)
        paths = {**tf_paths(*CASES[index], data_format=args.data_format),
                 **torch_paths(*CASES[index])}
        if position == 0:
            # The process's first measurements pay one-time costs (seen: the
            # first training step timed ran 50% slower, whichever path it
            # was): time one path once, untabulated.
            forward, train_step = next(iter(paths.values()))
            median_ms(forward, args.repeats)
            median_ms(train_step, args.repeats)
        for name, (forward, train_step) in paths.items():
            try:
                with PeakMemory() as memory:
                    fwd = median_ms(forward, args.repeats)
                with PeakMemory() as train_memory:
                    train = median_ms(train_step, max(args.repeats // 2, 3))
            except Exception as error:  # the built-in layer fails on some cases
                print(f"{label:<34} {name:<24} failed: {type(error).__name__}")
                continue
            row = dict(case=label, path=name, forward_ms=fwd,
                       forward_gflops=flops / fwd / 1e6,
                       percent_sgemm=100 * flops / fwd / 1e6 / peak,
                       train_ms=train, train_gflops=3 * flops / train / 1e6,
                       peak_mib=_mib(memory.peak), train_peak_mib=_mib(train_memory.peak))
            rows.append(row)
            peak_text = "/".join("n/a" if v is None else f"{v:.0f}"
                                 for v in (row["peak_mib"], row["train_peak_mib"]))
            print(f"{label:<34} {name:<24} {fwd:9.2f} {row['forward_gflops']:8.1f} "
                  f"{row['percent_sgemm']:6.0f}% {train:9.2f} {row['train_gflops']:8.1f} "
                  f"{peak_text:>19}", flush=True)
    scaling_rows = scaling(args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(sgemm_gflops=peak, rows=rows, scaling=scaling_rows), f, indent=1)


if __name__ == "__main__":
    main()
