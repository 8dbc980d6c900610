"""Forward and training-step timings of 3-D transposed convolutions on this machine.

Prints one table per CPU configuration and writes them all to one result
file (``common.result_path``: results/conv3d_transpose/<cpu id>_<date>_<dtype>
[-<label>].json): tf_conv3dt with implementation "auto" (measured: it times
the lowerings on its first call, into a fresh tuning cache) and each
lowering ("native", "gemm", "subpixel"), keras.layers.Conv3DTranspose, and
torch.nn.functional.conv_transpose3d when torch is installed (in a process
of its own: ``common.torch_ms``). For each case and each path: median
milliseconds, GFLOP/s, percent of the NumPy sgemm GFLOP/s measured in the
same run, and the peak extra resident memory; then, per case, how "auto"
(tuned, and the static rule's choice) compares with the fastest path, and
what tuning cost.

Each configuration of ``--configurations`` (``common.CONFIGURATIONS``;
"default", this machine as it is, unless given) runs in a child process
with its environment. benchmarks/derive_auto_rule.py derives "auto"'s rule
from the files it writes.

Usage: python benchmarks/bench_conv3d_transpose.py [--repeats 20] [--cases 0 2]
       [--policy mixed_float16] [--data-format channels_first]
       [--configurations default avx2 onednn] [--skip-scaling] [--label LABEL]
"""

import argparse
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
from tf_conv3dt.ops import lowerings
from tf_conv3dt._keras import keras
from tf_conv3dt.ops import tuning

import common

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
    case = common.CASES[index]
    paths = (common.torch_paths(*case, policy=policy) if name.startswith("torch")
             else common.tf_paths(*case, data_format=data_format))
    train_step = paths[name][1]
    train_step()
    common.peak.trim()  # hand what the first (tracing) step freed back to the system
    with common.peak.PeakMemory() as memory:
        train_step()
    print(json.dumps(_mib(memory.peak)))


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
        with common.peak.PeakMemory() as memory:
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
    """``{configuration: its run}``: the benchmark once per configuration,
    each in a child process with its environment."""
    results = {}
    for name in args.configurations:
        with tempfile.TemporaryDirectory() as scratch:
            path = os.path.join(scratch, "run.json")
            command = [sys.executable, __file__, "--repeats", str(args.repeats),
                       "--run-to", path, "--policy", args.policy,
                       "--data-format", args.data_format]
            if args.cases is not None:
                command += ["--cases", *map(str, args.cases)]
            if args.skip_scaling:
                command.append("--skip-scaling")
            environment = common.CONFIGURATIONS[name]
            print(f"\n=== configuration {name}: "
                  f"{' '.join(f'{k}={v}' for k, v in environment.items()) or 'as is'}",
                  flush=True)
            subprocess.run(command, env={**os.environ, **environment}, check=True)
            with open(path) as f:
                results[name] = json.load(f)
    return results


def measure(args):
    """This process's run: ``common.run_record()`` and its rows, summary
    and scaling."""
    keras.mixed_precision.set_global_policy(args.policy)
    # A fresh cache, so that the run measures tuning itself (unless one is given).
    os.environ.setdefault(tuning.ENV_CACHE_DIR, tempfile.mkdtemp(prefix="bench-tuning-"))
    tuning.set_autotune(True)
    peak = sgemm_gflops()
    record = common.run_record()
    torch = common.torch_version()
    print(f"{record['cpu']}, {record['cores']} cores, TensorFlow {tf.__version__} "
          f"(oneDNN {'on' if record['cpu_configuration'] == 'onednn' else 'off'}, "
          f"rule {ops.rule_key(keras.mixed_precision.global_policy().compute_dtype)}), "
          f"Keras {keras.__version__}, {args.policy}, {args.data_format}, "
          f"{'GPU' if tf.config.list_logical_devices('GPU') else 'CPU'}, torch {torch}")
    print(f"numpy sgemm: {peak:.1f} GFLOP/s")
    header = (f"{'case':<34} {'path':<24} {'fwd ms':>9} {'GFLOP/s':>8} {'%sgemm':>7} "
              f"{'train ms':>9} {'GFLOP/s':>8} {'train peak MiB':>15}")
    print(header)
    print("-" * len(header))
    rows = []
    for index in args.cases if args.cases is not None else range(len(common.CASES)):
        case = common.CASES[index]
        shape, filters, kernel, stride, padding = case
        label = common.case_label(case)
        compute_dtype = keras.mixed_precision.global_policy().compute_dtype
        rule = ops.resolve_implementation("auto", (kernel,) * 3, (stride,) * 3, compute_dtype)
        auto, timed_s, tuning_s, cache_hit_s = tuning_cost(*case, args.data_format,
                                                           compute_dtype)

        def lowering(name):
            if name == "tf_conv3dt auto":
                return auto
            return name.split()[1] if name.startswith("tf_conv3dt") else None

        flops = forward_flops(shape, filters, kernel)
        library = common.tf_paths(*case, data_format=args.data_format)
        forward = common.interleaved_ms({name: f for name, (f, _) in library.items()},
                                        args.repeats)
        # As many training steps as forward passes: with 3 of each, two
        # timings of one graph (auto's row and its lowering's) differed by
        # up to 1.26x on 2026-12-04, with 15 by at most 1.07x.
        train = common.interleaved_ms({name: t for name, (_, t) in library.items()},
                                      args.repeats)
        torch_times = common.torch_ms(case, args.repeats, args.policy)
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
    return dict(record, torch=torch, policy=args.policy, data_format=args.data_format,
                sgemm_gflops=peak, rows=rows, summary=summary, scaling=scaling_rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--cases", type=int, nargs="*",
                        help="indices into common.CASES (default all)")
    parser.add_argument("--policy", default="float32", choices=sorted(common.POLICY_DTYPES),
                        help="Keras dtype policy of the TensorFlow paths")
    parser.add_argument("--data-format", default="channels_last",
                        choices=["channels_last", "channels_first"],
                        help="data format of the TensorFlow paths (PyTorch's is NCDHW)")
    parser.add_argument("--configurations", nargs="+", default=["default"],
                        choices=sorted(common.CONFIGURATIONS),
                        help="CPU configurations, each run in a child process")
    parser.add_argument("--skip-scaling", action="store_true",
                        help="leave out the table of auto's scaling with size")
    common.add_result_arguments(parser, "conv3d_transpose")
    parser.add_argument("--peak-memory-of", nargs=2, metavar=("CASE", "PATH"),
                        help=argparse.SUPPRESS)  # the child process of train_peak_mib
    parser.add_argument("--run-to", help=argparse.SUPPRESS)  # a configuration's child
    args = parser.parse_args()
    if args.peak_memory_of:
        keras.mixed_precision.set_global_policy(args.policy)
        return _measure_peak_memory(int(args.peak_memory_of[0]), args.peak_memory_of[1],
                                    args.data_format, args.policy)
    if args.run_to:
        with open(args.run_to, "w") as f:
            json.dump(measure(args), f)
        return
    path = common.result_path(args.out, common.POLICY_DTYPES[args.policy],
                              args.data_format if args.data_format != "channels_last" else None,
                              args.label)
    common.write_result(run_configurations(args), path)


if __name__ == "__main__":
    main()
