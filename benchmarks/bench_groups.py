"""Grouped and depthwise Conv3DTranspose against PyTorch's grouped conv_transpose3d.

For each configuration, under a Keras mixed-precision ``--policy``: the
forward pass and training step (loss ``sum(y * y)``, gradients with respect
to the input and the kernel) of ``auto`` and each lowering, timed in
interleaved rounds in this process, and PyTorch's
``conv_transpose3d(groups=g)`` on tensors of the policy's compute dtype,
timed in a child process of its own (its OpenMP threads slow what runs next
in theirs): bench_conv3d_transpose's paths and timing, with ``groups``.
Median ms; the result goes to
benchmarks/results/groups/<cpu>[_<dtype>]_<date>.json:

    python benchmarks/bench_groups.py [--policy mixed_bfloat16]
"""

import argparse
import datetime
import os

import tensorflow as tf

from tf_conv3dt._keras import keras
from tf_conv3dt.ops import cpu, lowerings
from bench_conv3d_transpose import interleaved_ms, tf_paths, time_torch, torch_ms
from bench_onnx import cpu_model, write_result

# (name, input shape (N, D, H, W, C), filters, kernel, stride, padding, groups)
CONFIGS = [
    ("depthwise k3 s2 same", (2, 16, 16, 16, 32), 32, 3, 2, "same", 32),
    ("depthwise k2 s2", (2, 16, 16, 16, 64), 64, 2, 2, "valid", 64),
    ("groups 4 k4 s2 same", (1, 16, 16, 16, 64), 32, 4, 2, "same", 4),
    ("groups 2 k3 s1 same", (2, 12, 12, 12, 32), 32, 3, 1, "same", 2),
]
LOWERINGS = ("auto", *lowerings.names(auto=True))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--policy", default="float32",
                        choices=("float32", "mixed_float16", "mixed_bfloat16"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "groups"))
    parser.add_argument("--torch-of", type=int, metavar="CONFIG",
                        help="print PyTorch's times on one configuration (the child process)")
    args = parser.parse_args()
    if args.torch_of is not None:
        _, *arguments, groups = CONFIGS[args.torch_of]
        return time_torch(arguments, args.repeats, args.policy, groups)
    keras.mixed_precision.set_global_policy(args.policy)
    train_repeats = max(args.repeats // 2, 3)  # as bench_conv3d_transpose.py times them
    rows = []
    print(f"{'configuration':<24} {'path':<10} {'fwd ms':>8} {'train ms':>9}")
    for index, (name, *arguments, groups) in enumerate(CONFIGS):
        paths = tf_paths(*arguments, groups=groups)
        forward = interleaved_ms({n: f for n, (f, _) in paths.items()}, args.repeats)
        train = interleaved_ms({n: t for n, (_, t) in paths.items()}, train_repeats)
        torch_times = torch_ms(index, args, script=__file__) or (None, None)
        row = {"configuration": name, "input_shape": list(arguments[0]),
               "filters": arguments[1], "kernel": arguments[2], "stride": arguments[3],
               "padding": arguments[4], "groups": groups,
               "torch": {"forward_ms": torch_times[0], "train_ms": torch_times[1]}}
        for lowering in LOWERINGS:
            path = f"tf_conv3dt {lowering}"
            row[lowering] = {"forward_ms": forward.get(path), "train_ms": train.get(path)}
        rows.append(row)
        for path in (*LOWERINGS, "torch"):
            f, t = row[path]["forward_ms"], row[path]["train_ms"]
            print(f"{name:<24} {path:<10} {f or float('nan'):8.2f} {t or float('nan'):9.2f}",
                  flush=True)
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(),
              "isa": cpu.cpu_isa(), "cores": os.cpu_count(), "tensorflow": tf.__version__,
              "policy": args.policy, "repeats": args.repeats, "train_repeats": train_repeats,
              "environment": {k: v for k, v in os.environ.items()
                              if k.startswith(("TF_ENABLE_ONEDNN", "ONEDNN", "OPENBLAS"))},
              "rows": rows}
    # A float32 run keeps the name earlier runs had; another policy names its dtype.
    write_result(result, args.out, None if args.policy == "float32"
                 else keras.mixed_precision.Policy(args.policy).compute_dtype)


if __name__ == "__main__":
    main()
