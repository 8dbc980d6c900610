"""Grouped and depthwise Conv3DTranspose against PyTorch's grouped conv_transpose3d.

For each configuration, under a Keras mixed-precision ``--policy``: the
forward pass and training step (loss ``sum(y * y)``, gradients with respect
to the input and the kernel) of ``auto`` and each lowering, timed in
interleaved rounds in this process, and PyTorch's
``conv_transpose3d(groups=g)`` on tensors of the policy's compute dtype,
timed in a child process of its own (its OpenMP threads slow what runs next
in theirs): the main benchmark's paths and timing (``common``), with
``groups``. Median ms; the result goes to results/groups/, labelled by the
compute dtype (``common.result_path``):

    python benchmarks/bench_groups.py [--policy mixed_bfloat16]
"""

import argparse

from tf_conv3dt._keras import keras
from tf_conv3dt.ops import lowerings

import common

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
    parser.add_argument("--policy", default="float32", choices=sorted(common.POLICY_DTYPES))
    common.add_result_arguments(parser, "groups")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.policy)
    train_repeats = max(args.repeats // 2, 3)  # as bench_conv3d_transpose.py times them
    rows = []
    print(f"{'configuration':<24} {'path':<10} {'fwd ms':>8} {'train ms':>9}")
    for name, *arguments, groups in CONFIGS:
        paths = common.tf_paths(*arguments, groups=groups)
        forward = common.interleaved_ms({n: f for n, (f, _) in paths.items()}, args.repeats)
        train = common.interleaved_ms({n: t for n, (_, t) in paths.items()}, train_repeats)
        torch_times = (common.torch_ms(arguments, args.repeats, args.policy, groups)
                       or (None, None))
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
    result = dict(common.run_record(), policy=args.policy, repeats=args.repeats,
                  train_repeats=train_repeats, rows=rows)
    common.write_result(result, common.result_path(
        args.out, common.POLICY_DTYPES[args.policy], args.label))


if __name__ == "__main__":
    main()
