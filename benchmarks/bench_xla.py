"""Whether XLA speeds up the forward pass: each lowering with and without ``jit_compile=True``.

For benchmark cases (bench_conv3d_transpose's CASES) under a Keras dtype
policy, times the forward pass of a Conv3DTranspose layer of each lowering
traced plainly and traced for XLA, in interleaved rounds of primed calls
(``interleaved_ms``: two rounds only for a path whose call takes over 2 s),
and PyTorch's forward in a child process of its own on
tensors of the policy's compute dtype. Written to
benchmarks/results/xla/<cpu>-<isa>_<date>.json.

Usage: python benchmarks/bench_xla.py [--cases 3 2] [--policy mixed_bfloat16]
       [--repeats 15]
"""

import argparse
import datetime
import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_conv3d_transpose as bench  # noqa: E402
from bench_onnx import write_result  # noqa: E402

import tf_conv3dt  # noqa: E402
from tf_conv3dt._keras import keras  # noqa: E402
from tf_conv3dt.ops import cpu  # noqa: E402


def forward_paths(shape, filters, kernel, stride, padding):
    """``{"<lowering>" / "<lowering> XLA": blocking forward call}`` of one case."""
    x = tf.random.normal(shape)
    paths = {}
    for implementation in bench.LOWERINGS:
        layer = tf_conv3dt.Conv3DTranspose(filters, kernel, stride, padding=padding,
                                           implementation=implementation)
        layer.build(shape)
        for suffix, jit in (("", False), (" XLA", True)):
            function = tf.function(lambda x, layer=layer: layer(x), jit_compile=jit)
            function(x).numpy()  # trace and compile here, not in the first timed call
            paths[implementation + suffix] = lambda f=function: f(x).numpy()
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[3, 2],
                        help="indices into bench_conv3d_transpose.CASES")
    parser.add_argument("--policy", default="mixed_bfloat16")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out-dir", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "xla"))
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.policy)
    print(f"{cpu.cpu_model()} ({cpu.cpu_isa()}), {os.cpu_count()} cores, TensorFlow "
          f"{tf.__version__}, oneDNN {'on' if cpu.cpu_configuration() == 'onednn' else 'off'}"
          f", {args.policy}")
    rows = []
    for index in args.cases:
        case = bench.CASES[index]
        shape, filters, kernel, stride, padding = case
        ms = bench.interleaved_ms(forward_paths(*case), args.repeats)
        torch = bench.torch_ms(index, args)
        ms["torch"] = torch[0] if torch else None
        name = f"{shape}->{filters} k{kernel} s{stride} {padding}"
        print(name)
        for path, value in ms.items():
            print(f"  {path:<14} {value:9.2f} ms" if value is not None else f"  {path}: failed")
        rows.append({"case": name, "forward_ms": ms})
    write_result({"date": datetime.date.today().isoformat(), "cpu": cpu.cpu_model(),
                  "isa": cpu.cpu_isa(), "cores": os.cpu_count(),
                  "tensorflow": tf.__version__, "torch": bench._torch_version(),
                  "policy": args.policy,
                  "cpu_configuration": cpu.cpu_configuration(),
                  "repeats": args.repeats, "rows": rows}, args.out_dir)


if __name__ == "__main__":
    main()
