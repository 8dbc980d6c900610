"""Which lowering ONNX Runtime runs faster: the native op's ConvTranspose node or GEMM's MatMuls.

Each configuration is one Conv3DTranspose model, converted twice by the
export's own ``tf_conv3dt.export.onnx.convert`` (``implementation="native"``
gives one ConvTranspose node, ``"gemm"`` MatMul / Reshape / Transpose) and
timed in ONNX Runtime's CPU provider on 2 threads, as the export times it:
median of ``--repeats`` runs, in interleaved rounds, in one process. The
result goes to benchmarks/results/onnx/<cpu>_<date>.json with the machine:

    python benchmarks/bench_onnx.py
"""

import argparse
import datetime
import json
import os
import platform

import numpy as np

from tf_conv3dt import Conv3DTranspose
from tf_conv3dt._keras import keras
from tf_conv3dt.export import onnx

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


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def result_path(cpu, date, out_dir, isa=None, variant=None):
    """``out_dir/<cpu>[-<isa>][_<variant>]_<date>.json``, the name the results
    directories use; ``isa``, the CPU's vector class, tells apart CPUs of one
    model name ("AMD EPYC" is an AVX2 and an AVX-512 machine; two AVX-512
    EPYCs of different families still share it), and ``variant`` runs of one
    machine and day (a dtype)."""
    slug = "-".join(cpu.lower().split()[:2]).replace("(r)", "") + (f"-{isa}" if isa else "")
    return os.path.join(out_dir, f"{slug}{f'_{variant}' if variant else ''}_{date}.json")


def write_result(result, out_dir, variant=None, merged=False):
    """Writes a run's ``result`` (with its "cpu" and "date", and "isa" where
    it records one) to its :func:`result_path`, which must not exist (a kept
    run of another CPU of the same name may be there) unless ``result`` was
    ``merged`` with what it holds."""
    os.makedirs(out_dir, exist_ok=True)
    path = result_path(result["cpu"], result["date"], out_dir, result.get("isa"), variant)
    try:
        with open(path, "w" if merged else "x") as f:
            json.dump(result, f, indent=1)
    except FileExistsError:
        raise SystemExit(f"{path} exists; not overwritten: move it, or write this run "
                         "to another directory") from None
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out",
                        default=os.path.join(os.path.dirname(__file__), "results", "onnx"))
    args = parser.parse_args()
    import onnxruntime
    import tensorflow as tf

    rows = []
    print(f"{'configuration':<26} {'batch':>5} {'native ms':>10} {'gemm ms':>9} "
          f"{'native/gemm':>11}")
    for name, shape, filters, kernel, strides, padding, dilation in CONFIGS:
        inputs = keras.Input(shape, name="x")
        layer = Conv3DTranspose(filters, kernel, strides, padding=padding,
                                dilation_rate=dilation, name="y")
        model = keras.Model(inputs, layer(inputs))
        files = {lowering: onnx.convert(model, lowering) for lowering in LOWERINGS}
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
    cpu = cpu_model()
    result = {"date": datetime.date.today().isoformat(), "cpu": cpu,
              "cores": os.cpu_count(), "threads": 2, "repeats": args.repeats,
              "rounds": args.rounds, "onnxruntime": onnxruntime.__version__,
              "tensorflow": tf.__version__, "opset": onnx.OPSET, "rows": rows}
    write_result(result, args.out)


if __name__ == "__main__":
    main()
