"""Which lowering ONNX Runtime runs faster: the native op's ConvTranspose node or GEMM's MatMuls.

Each configuration is one Conv3DTranspose model, converted twice by the
export's own ``tf_conv3dt.export.onnx.convert`` (traced with the native op it
gives one ConvTranspose node, with "gemm" MatMul / Reshape / Transpose) and
timed in ONNX Runtime's CPU provider on 2 threads, as the export times it:
median of ``--repeats`` runs, in interleaved rounds, in one process. The
result goes to results/onnx/ (``common.result_path``):

    python benchmarks/bench_onnx.py
"""

import argparse

import numpy as np

from tf_conv3dt import Conv3DTranspose
from tf_conv3dt._keras import keras
from tf_conv3dt.export import onnx
from tf_conv3dt.export.signature import ForcedLowering

import common

# (name, input shape without batch, filters, kernel, strides, padding, dilation)
CONFIGS = [
    ("reference k2 s2 valid", (10, 8, 12, 128), 32, 2, 2, "valid", 1),
    ("u-net k3 s2 same", (12, 12, 12, 32), 16, 3, 2, "same", 1),
    ("u-net k4 s2 same", (12, 12, 12, 32), 16, 4, 2, "same", 1),
    ("decoder k2 s2 deep", (6, 6, 6, 128), 64, 2, 2, "valid", 1),
    ("k3 s1 same", (16, 16, 16, 16), 16, 3, 1, "same", 1),
    ("k3 s1 dilation 2", (16, 16, 16, 16), 16, 3, 1, "same", 2),
    ("k3 s2 valid, 1 channel", (24, 24, 24, 1), 8, 3, 2, "valid", 1),
]
LOWERINGS = ("native", "gemm")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    common.add_result_arguments(parser, "onnx")
    args = parser.parse_args()
    import onnxruntime

    rows = []
    print(f"{'configuration':<26} {'batch':>5} {'native ms':>10} {'gemm ms':>9} "
          f"{'native/gemm':>11}")
    for name, shape, filters, kernel, strides, padding, dilation in CONFIGS:
        inputs = keras.Input(shape, name="x")
        layer = Conv3DTranspose(filters, kernel, strides, padding=padding,
                                dilation_rate=dilation, name="y")
        model = keras.Model(inputs, layer(inputs))
        files = {lowering: onnx.convert(model, ForcedLowering(lowering))
                 for lowering in LOWERINGS}
        for batch in args.batches:
            times = {lowering: [] for lowering in LOWERINGS}
            for _ in range(args.rounds):  # interleaved against the machine's drift
                for lowering in LOWERINGS:
                    times[lowering].append(onnx.latency_ms(files[lowering], batch=batch,
                                                           repeats=args.repeats))
            ms = {lowering: float(np.median(t)) for lowering, t in times.items()}
            rows.append({"configuration": name, "input_shape": list(shape), "filters": filters,
                         "kernel": kernel, "strides": strides, "padding": padding,
                         "dilation": dilation, "batch": batch, "ms": ms,
                         "nodes": {lowering: onnx.node_types(files[lowering])
                                   for lowering in LOWERINGS}})
            print(f"{name:<26} {batch:>5} {ms['native']:10.3f} {ms['gemm']:9.3f} "
                  f"{ms['native'] / ms['gemm']:11.2f}", flush=True)
    result = dict(common.run_record(), threads=2, repeats=args.repeats, rounds=args.rounds,
                  onnxruntime=onnxruntime.__version__, opset=onnx.OPSET, rows=rows)
    common.write_result(result, common.result_path(args.out, args.label))


if __name__ == "__main__":
    main()
