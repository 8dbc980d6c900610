"""Forward and training-step timings of 3-D transposed convolutions on this machine.

Prints one table (and writes it as JSON with --json): tf_conv3dt with
implementation "auto" (measured: it times the lowerings on its first call,
into a fresh tuning cache) and each lowering ("native", "gemm", "subpixel"),
keras.layers.Conv3DTranspose, and torch.nn.functional.conv_transpose3d when
torch is installed (timed in a child process of its own: PyTorch's spinning
OpenMP threads slow whatever runs next in its process). For each case and
each path: median milliseconds, GFLOP/s, percent of the NumPy sgemm GFLOP/s
measured in the same run, and the peak extra resident memory; then, per
case, how "auto" (tuned, and the static rule's choice) compares with the
fastest path, and what tuning cost (the targets in docs/performance.md).

--configurations runs the whole benchmark once per CPU configuration, each in
a child process with its environment: "default" (this machine as it is),
"avx2" (what CPUs without AVX-512 get: TensorFlow's Eigen kernels, and oneDNN
in PyTorch and OpenBLAS in NumPy held to AVX2), "onednn" (TensorFlow's
oneDNN kernels switched on) and "onednn-avx2" (those kernels held to AVX2, as
an AVX2-only CPU runs them with oneDNN switched on).
benchmarks/derive_auto_rule.py derives "auto"'s rule from the JSON it writes.

Usage: python benchmarks/bench_conv3d_transpose.py [--repeats 20] [--json out.json]
       [--cases 0 2] [--policy mixed_float16] [--data-format channels_first]
       [--configurations default avx2 onednn] [--skip-scaling]
"""

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt import ops
from tf_conv3dt.ops import cpu, lowerings
from tf_conv3dt._keras import keras
from tf_conv3dt.ops import tuning


def _torch():
    """PyTorch (the optional extra tf_conv3dt[bench]) or None; imported only in
    the child processes that time it."""
    try:
        import torch
    except ImportError:
        return None
    return torch

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
    # 3-D U-Net decoder stages.
    ((2, 32, 32, 32, 64), 32, 2, 2, "valid"),
    ((1, 64, 64, 64, 32), 16, 3, 2, "same"),
    ((2, 24, 24, 24, 128), 64, 3, 1, "same"),
]

# The environment of each CPU configuration (--configurations).
CONFIGURATIONS = {
    "default": {},
    "avx2": {"TF_ENABLE_ONEDNN_OPTS": "0", "ONEDNN_MAX_CPU_ISA": "AVX2",
             "OPENBLAS_CORETYPE": "Haswell"},
    "onednn": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "onednn-avx2": {"TF_ENABLE_ONEDNN_OPTS": "1", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}
# The lowerings "auto" chooses among.
LOWERINGS = lowerings.names(auto=True)


def forward_flops(shape, filters, kernel):
    """2 * (input voxels) * C_in * taps * filters: every multiply-add of the op."""
    batch, d, h, w, channels = shape
    return 2 * batch * d * h * w * channels * kernel ** 3 * filters


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


def interleaved_ms(fns, repeats, warmup=3, slow_s=2.0):
    """Median milliseconds of each of ``fns`` ({name: fn}), timed in rounds of
    one call each (right after an untimed one, as tuning times them:
    ``tuning.Timer.primed``), so that what else a shared machine runs weighs
    on all of them alike. Only paths of one library belong together: the worker threads
    of PyTorch's OpenMP pool spin on after its call, slowing whatever runs
    next, and a pause between calls would wake every path up cold (+4 ms a
    call here). Names whose call raises are left out. A path whose first call
    (the trace) takes over ``slow_s`` (Eigen's Conv3DBackprop* kernels on the
    large cases: seconds a step) is timed in two rounds only."""
    slow, failed = set(), set()
    for name, fn in fns.items():
        try:
            start = time.perf_counter()
            fn()
            if time.perf_counter() - start > slow_s:
                slow.add(name)
                continue
            for _ in range(warmup - 1):
                fn()
        except Exception as error:  # the built-in layer fails on some cases
            print(f"  {name} failed: {type(error).__name__}", flush=True)
            failed.add(name)
    times = {name: [] for name in fns if name not in failed}
    timer = tuning.Timer()
    for round_ in range(repeats):
        for name in times:
            if name in slow and round_ >= 2:
                continue
            times[name].append(timer.primed(fns[name]))
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def train_peak_mib(index, name, args):
    """Peak resident-memory growth of one training step of one path, measured
    in a child process of its own (in this process, memory that allocators
    kept from earlier paths would hide it), after a first, tracing step."""
    command = [sys.executable, __file__, "--peak-memory-of", str(index), name,
               "--policy", args.policy, "--data-format", args.data_format]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def _measure_peak_memory(index, name, data_format, policy):
    paths = (torch_paths(*CASES[index], policy=policy) if name.startswith("torch")
             else tf_paths(*CASES[index], data_format=data_format))
    train_step = paths[name][1]
    train_step()
    try:  # hand what the first (tracing) step freed back to the system
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    with PeakMemory() as memory:
        train_step()
    print(json.dumps(_mib(memory.peak)))


def tf_paths(shape, filters, kernel, stride, padding, data_format="channels_last", groups=1):
    """Forward and training step (loss ``sum(y * y)``) of our layer with
    "auto" and each lowering, and of Keras's own layer where it has the
    configuration (it has no ``groups``), under the global Keras policy.

    The input is in the policy's compute dtype, as the layer before hands
    it on in a mixed-precision model and as PyTorch's paths get theirs. Runs
    before 2026-12-04's last ones fed float32, so their bfloat16 rows hold
    each layer's cast of its input too."""
    if data_format == "channels_first":
        shape = (shape[0], shape[4], *shape[1:4])
    x = tf.cast(tf.random.normal(shape), keras.mixed_precision.global_policy().compute_dtype)
    paths = {}
    for implementation in ("auto", *LOWERINGS):
        name = f"tf_conv3dt {implementation}"
        layer = tf_conv3dt.Conv3DTranspose(filters, kernel, stride, padding=padding,
                                           data_format=data_format, groups=groups,
                                           implementation=implementation)
        layer.build(shape)
        paths[name] = layer
    if groups == 1:
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


TORCH_DTYPES = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def torch_paths(shape, filters, kernel, stride, padding, policy="float32", groups=1):
    """PyTorch's forward and training step (loss ``sum(y * y)``), on tensors
    of the policy's compute dtype, with Keras's padding and a bias, as our
    layer and Keras's add one (runs before 2026-12-04 had none)."""
    torch = _torch()
    if torch is None:
        return {}
    torch.set_num_threads(os.cpu_count())
    dtype = getattr(torch, TORCH_DTYPES[policy])
    batch, d, h, w, channels = shape
    x = torch.randn(batch, channels, d, h, w, dtype=dtype)
    weight = torch.randn(channels, filters // groups, kernel, kernel, kernel,
                         dtype=dtype) * 0.05
    bias = torch.randn(filters, dtype=dtype) * 0.05
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
                x, weight, bias, stride=stride, padding=pad, output_padding=out_pad,
                groups=groups)

    xg = x.clone().requires_grad_(True)
    wg = weight.clone().requires_grad_(True)

    def train_step():
        y = torch.nn.functional.conv_transpose3d(xg, wg, bias, stride=stride, padding=pad,
                                                 output_padding=out_pad, groups=groups)
        (y * y).sum().backward()
        xg.grad = None
        wg.grad = None

    return {"torch conv_transpose3d": (forward, train_step)}


def torch_ms(index, args, script=__file__):
    """PyTorch's (forward, training) median ms on one case, timed in a child
    process of its own (``script --torch-of index``, which calls
    :func:`time_torch`); None where torch is missing or the case fails there."""
    command = [sys.executable, script, "--torch-of", str(index), "--repeats",
               str(args.repeats), "--policy", args.policy]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        print(f"  torch failed: {result.stderr.strip().splitlines()[-1:]}", flush=True)
        return None


def time_torch(case, repeats, policy, groups=1):
    """Prints PyTorch's (forward, training) median ms on ``case`` (shape,
    filters, kernel, stride, padding) as JSON: the child :func:`torch_ms` reads."""
    paths = torch_paths(*case, policy=policy, groups=groups)
    if not paths:
        return print(json.dumps(None))
    (forward, train), = paths.values()
    times = (interleaved_ms({"f": forward}, repeats).get("f"),
             interleaved_ms({"t": train}, repeats).get("t"))
    print(json.dumps(None if None in times else times))


def _torch_version():
    """PyTorch's version, read from a child process (this one never imports it)."""
    result = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "not installed"


def tuning_cost(shape, filters, kernel, stride, padding, data_format, dtype):
    """(what tuning chose: a lowering, or "forward+gradient" where it takes
    one lowering's forward with another's gradient; seconds the timing took,
    what tuning's Knobs.budget_s bounds; seconds the first "auto" call of this case
    took longer than a later one, which finds the choice in memory: the
    timing, and what a first call costs untuned too, such as its first
    full-size run; seconds a new process spends taking the choice from the
    cache, over such a later call). Later calls and cache hits are each the
    least of three: one call's noise is as large as a cache hit's cost on
    the slowest cases (runs before 2026-12-04 took one of each)."""
    channels = shape[4]
    if data_format == "channels_first":
        shape = (shape[0], shape[4], *shape[1:4])
    x = tf.zeros(shape, dtype)
    k = tf.zeros((kernel,) * 3 + (filters, channels), dtype)

    def seconds():
        start = time.perf_counter()
        ops.conv3d_transpose(x, k, stride, padding, data_format=data_format).numpy()
        return time.perf_counter() - start

    tuning.forget()
    first = seconds()
    again = min(seconds() for _ in range(3))
    decision = next(iter(tuning.current_cache().memory.values()))
    chosen = "+".join(dict.fromkeys((decision.forward, decision.gradient)))
    hits = []
    for _ in range(3):
        tuning.forget()
        hits.append(seconds())
    return (chosen, decision.seconds, max(first - again, 0.0),
            max(min(hits) - again, 0.0))


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


def compare(rows):
    """Per case: tuned auto and the static rule's choice against our fastest
    lowering, auto against the fastest path and PyTorch, the best GEMM-bound
    rate, auto's training peak against PyTorch's, and what tuning cost."""
    print(f"\n{'case':<38} {'auto':>16} {'rule':>9} {'fwd/own':>8} {'train/own':>10} "
          f"{'rule fwd/own':>13} {'rule train/own':>15} {'fwd/torch':>10} {'train/torch':>12} "
          f"{'fwd/best':>9} {'train/best':>11} {'best %sgemm':>12} {'peak/torch':>11} "
          f"{'timed s':>8} {'first call s':>13} {'cache hit ms':>13}")
    summary = []
    for case in dict.fromkeys(r["case"] for r in rows):
        paths = {r["path"]: r for r in rows if r["case"] == case}
        auto = paths.get("tf_conv3dt auto")
        if auto is None:
            continue
        own = [paths[f"tf_conv3dt {name}"] for name in LOWERINGS
               if f"tf_conv3dt {name}" in paths]
        torch_row = paths.get("torch conv_transpose3d")
        rule = paths.get(f"tf_conv3dt {auto['rule']}", auto)
        # The lowering tuning chose, as its own row times it: what auto runs,
        # without the noise between two timings of one graph (a forward with
        # another lowering's gradient has no row of its own: auto's).
        chosen = paths.get(f"tf_conv3dt {auto['lowering']}", auto)
        entry = dict(
            case=case, auto=auto["lowering"], rule=auto["rule"],
            forward_over_own=auto["forward_ms"] / min(r["forward_ms"] for r in own),
            train_over_own=auto["train_ms"] / min(r["train_ms"] for r in own),
            rule_forward_over_own=rule["forward_ms"] / min(r["forward_ms"] for r in own),
            rule_train_over_own=rule["train_ms"] / min(r["train_ms"] for r in own),
            choice_forward_over_own=chosen["forward_ms"] / min(r["forward_ms"] for r in own),
            choice_train_over_own=chosen["train_ms"] / min(r["train_ms"] for r in own),
            forward_over_torch=(auto["forward_ms"] / torch_row["forward_ms"]
                                if torch_row else None),
            train_over_torch=auto["train_ms"] / torch_row["train_ms"] if torch_row else None,
            forward_over_best=auto["forward_ms"] / min(r["forward_ms"] for r in paths.values()),
            train_over_best=auto["train_ms"] / min(r["train_ms"] for r in paths.values()),
            best_percent_sgemm=max(r["percent_sgemm"] for r in own),
            peak_over_torch=(auto["train_peak_mib"] / torch_row["train_peak_mib"]
                             if torch_row and auto["train_peak_mib"] is not None
                             and torch_row["train_peak_mib"] else None),
            timed_s=auto["timed_s"], tuning_s=auto["tuning_s"],
            cache_hit_s=auto["cache_hit_s"])
        summary.append(entry)

        def ratio(value, width):
            return f"{'n/a':>{width}}" if value is None else f"{value:{width - 1}.2f}x"

        print(f"{case:<38} {entry['auto']:>16} {entry['rule']:>9} "
              f"{ratio(entry['forward_over_own'], 8)} {ratio(entry['train_over_own'], 10)} "
              f"{ratio(entry['rule_forward_over_own'], 13)} "
              f"{ratio(entry['rule_train_over_own'], 15)} "
              f"{ratio(entry['forward_over_torch'], 10)} {ratio(entry['train_over_torch'], 12)} "
              f"{ratio(entry['forward_over_best'], 9)} {ratio(entry['train_over_best'], 11)} "
              f"{entry['best_percent_sgemm']:11.0f}% {ratio(entry['peak_over_torch'], 11)} "
              f"{entry['timed_s']:8.2f} {entry['tuning_s']:13.2f} "
              f"{entry['cache_hit_s'] * 1e3:13.1f}")
    return summary


def run_configurations(args):
    """The benchmark once per configuration, each in a child process."""
    results = {}
    for name in args.configurations:
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "rows.json")
            command = [sys.executable, __file__, "--repeats", str(args.repeats), "--json", path,
                       "--policy", args.policy, "--data-format", args.data_format]
            if args.cases is not None:
                command += ["--cases", *map(str, args.cases)]
            if args.skip_scaling:
                command.append("--skip-scaling")
            print(f"\n=== configuration {name}: "
                  f"{' '.join(f'{k}={v}' for k, v in CONFIGURATIONS[name].items()) or 'as is'}",
                  flush=True)
            subprocess.run(command, env={**os.environ, **CONFIGURATIONS[name]}, check=True)
            with open(path) as f:
                results[name] = dict(json.load(f), environment=CONFIGURATIONS[name])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


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
    parser.add_argument("--configurations", nargs="+", choices=sorted(CONFIGURATIONS),
                        help="run once per CPU configuration, each in a child process")
    parser.add_argument("--skip-scaling", action="store_true",
                        help="leave out the table of auto's scaling with size")
    parser.add_argument("--peak-memory-of", nargs=2, metavar=("CASE", "PATH"),
                        help=argparse.SUPPRESS)  # the child process of train_peak_mib
    parser.add_argument("--torch-of", type=int, metavar="CASE",
                        help=argparse.SUPPRESS)  # the child process of torch_ms
    args = parser.parse_args()
    if args.configurations:
        return run_configurations(args)
    if args.torch_of is not None:
        return time_torch(CASES[args.torch_of], args.repeats, args.policy)
    keras.mixed_precision.set_global_policy(args.policy)
    if args.peak_memory_of:
        return _measure_peak_memory(int(args.peak_memory_of[0]), args.peak_memory_of[1],
                                    args.data_format, args.policy)
    # A fresh cache, so that the run measures tuning itself (unless one is given).
    os.environ.setdefault(tuning.ENV_CACHE_DIR, tempfile.mkdtemp(prefix="bench-tuning-"))
    tuning.set_autotune(True)
    peak = sgemm_gflops()
    print(f"{cpu.cpu_model()}, {os.cpu_count()} cores, TensorFlow {tf.__version__} "
          f"(oneDNN {'on' if tf_conv3dt.ops.cpu_configuration() == 'onednn' else 'off'}, "
          f"rule {ops.rule_key(keras.mixed_precision.global_policy().compute_dtype)}), "
          f"Keras {keras.__version__}, {args.policy}, {args.data_format}, "
          f"{'GPU' if tf.config.list_logical_devices('GPU') else 'CPU'}"
          + (f", torch {_torch_version()}"))
    print(f"numpy sgemm: {peak:.1f} GFLOP/s")
    header = (f"{'case':<34} {'path':<24} {'fwd ms':>9} {'GFLOP/s':>8} {'%sgemm':>7} "
              f"{'train ms':>9} {'GFLOP/s':>8} {'train peak MiB':>15}")
    print(header)
    print("-" * len(header))
    rows = []
    for index in args.cases if args.cases is not None else range(len(CASES)):
        shape, filters, kernel, stride, padding = CASES[index]
        label = f"{shape}->{filters} k{kernel} s{stride} {padding}"
        compute_dtype = keras.mixed_precision.global_policy().compute_dtype
        rule = ops.resolve_implementation("auto", (kernel,) * 3, (stride,) * 3, compute_dtype)
        auto, timed_s, tuning_s, cache_hit_s = tuning_cost(*CASES[index], args.data_format,
                                                           compute_dtype)

        def lowering(name):
            if name == "tf_conv3dt auto":
                return auto
            return name.split()[1] if name.startswith("tf_conv3dt") else None

        flops = forward_flops(shape, filters, kernel)
        library = tf_paths(*CASES[index], data_format=args.data_format)
        forward = interleaved_ms({name: f for name, (f, _) in library.items()}, args.repeats)
        # As many training steps as forward passes: with 3 of each, two
        # timings of one graph (auto's row and its lowering's) differed by
        # up to 1.26x on 2026-12-04, with 15 by at most 1.07x.
        train = interleaved_ms({name: t for name, (_, t) in library.items()}, args.repeats)
        torch_times = torch_ms(index, args)
        if torch_times is not None:
            forward["torch conv_transpose3d"], train["torch conv_transpose3d"] = torch_times
        for name in forward:
            if name not in train:
                continue
            fwd = forward[name]
            peak_mib = (train_peak_mib(index, name, args)
                        if name in ("tf_conv3dt auto", "torch conv_transpose3d") else None)
            row = dict(case=label, path=name, forward_ms=fwd, lowering=lowering(name),
                       forward_gflops=flops / fwd / 1e6,
                       percent_sgemm=100 * flops / fwd / 1e6 / peak,
                       train_ms=train[name], train_gflops=3 * flops / train[name] / 1e6,
                       train_peak_mib=peak_mib)
            if name == "tf_conv3dt auto":
                row.update(rule=rule, timed_s=timed_s, tuning_s=tuning_s,
                           cache_hit_s=cache_hit_s)
            rows.append(row)
            peak_text = "-" if peak_mib is None else f"{peak_mib:.0f}"
            print(f"{label:<34} {name:<24} {fwd:9.2f} {row['forward_gflops']:8.1f} "
                  f"{row['percent_sgemm']:6.0f}% {train[name]:9.2f} "
                  f"{row['train_gflops']:8.1f} {peak_text:>15}", flush=True)
    summary = compare(rows)
    scaling_rows = [] if args.skip_scaling else scaling(args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=cpu.cpu_model(), cores=os.cpu_count(),
                           tensorflow=tf.__version__, torch=_torch_version(),
                           cpu_configuration=tf_conv3dt.ops.cpu_configuration(),
                           isa=cpu.cpu_isa(),
                           policy=args.policy, data_format=args.data_format,
                           sgemm_gflops=peak, rows=rows, summary=summary,
                           scaling=scaling_rows), f, indent=1)


if __name__ == "__main__":
    main()
