"""Whether XLA speeds up the forward pass: each lowering with and without ``jit_compile=True``.

For benchmark cases (``common.CASES``) under a Keras dtype
policy, times the forward pass of a Conv3DTranspose layer of each lowering
traced plainly and traced for XLA, in interleaved rounds of primed calls
(``common.interleaved_ms``: two rounds only for a path whose call takes over
2 s), and PyTorch's forward in a child process of its own on tensors of the
policy's compute dtype. Written to results/xla/, labelled by the compute
dtype (``common.result_path``).

Usage: python benchmarks/bench_xla.py [--cases 3 2] [--policy mixed_bfloat16]
       [--repeats 15]
"""

import argparse
import os

import tensorflow as tf

import tf_conv3dt
from tf_conv3dt._keras import keras
from tf_conv3dt.ops import cpu, lowerings

import common


def forward_paths(shape, filters, kernel, stride, padding):
    """``{"<lowering>" / "<lowering> XLA": blocking forward call}`` of one case."""
    x = tf.random.normal(shape)
    paths = {}
    for implementation in lowerings.names(auto=True):
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
                        help="indices into common.CASES")
    parser.add_argument("--policy", default="mixed_bfloat16",
                        choices=sorted(common.POLICY_DTYPES))
    parser.add_argument("--repeats", type=int, default=15)
    common.add_result_arguments(parser, "xla")
    args = parser.parse_args()
    keras.mixed_precision.set_global_policy(args.policy)
    print(f"{cpu.cpu_model()} ({cpu.cpu_isa()}), {os.cpu_count()} cores, TensorFlow "
          f"{tf.__version__}, oneDNN {'on' if cpu.cpu_configuration() == 'onednn' else 'off'}"
          f", {args.policy}")
    rows = []
    for index in args.cases:
        case = common.CASES[index]
        ms = common.interleaved_ms(forward_paths(*case), args.repeats)
        torch = common.torch_ms(case, args.repeats, args.policy)
        ms["torch"] = torch[0] if torch else None
        name = common.case_label(case)
        print(name)
        for path, value in ms.items():
            print(f"  {path:<14} {value:9.2f} ms" if value is not None else f"  {path}: failed")
        rows.append({"case": name, "forward_ms": ms})
    result = dict(common.run_record(), torch=common.torch_version(), policy=args.policy,
                  repeats=args.repeats, rows=rows)
    common.write_result(result, common.result_path(
        args.out, common.POLICY_DTYPES[args.policy], args.label))


if __name__ == "__main__":
    main()
