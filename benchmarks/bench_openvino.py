"""Which lowering OpenVINO runs fastest, against keras.layers.Conv3DTranspose converted alike.

Each of the main benchmark's cases (``common.CASES``, their shapes without
the batch) is one Conv3DTranspose model, converted by the export's own
``tf_conv3dt.export.openvino.convert`` once per lowering "auto" may take
(native: OpenVINO's ConvolutionBackpropData; gemm: MatMuls; subpixel:
forward Convolutions), and keras.layers.Conv3DTranspose's model converted
by the same function. Each is compiled for the CPU in float32 (the
precision the export verifies in) on 2 threads and timed at every
``--batches`` size: median of ``--repeats`` runs, in ``--rounds``
interleaved rounds, in one process. The result goes to results/openvino/
(``common.result_path``):

    python benchmarks/bench_openvino.py
"""

import argparse

import numpy as np

from tf_conv3dt import Conv3DTranspose
from tf_conv3dt._keras import keras
from tf_conv3dt.export import formats, openvino
from tf_conv3dt.export.signature import ForcedLowering
from tf_conv3dt.ops import rule
from tf_conv3dt.ops import lowerings

import common

BUILTIN = "keras Conv3DTranspose"


def _models(shape, filters, kernel, stride, padding):
    """``{path: openvino.Model}``: ours under each lowering, and the built-in layer's."""
    converted = {}
    for path, layer in [(name, Conv3DTranspose) for name in lowerings.names(auto=True)] + [
            (BUILTIN, keras.layers.Conv3DTranspose)]:
        inputs = keras.Input(shape, name="x")
        model = keras.Model(inputs, layer(filters, kernel, stride, padding=padding,
                                          name="y")(inputs))
        converted[path] = openvino.convert(
            model, ForcedLowering(path if path != BUILTIN else "auto"))
    return converted


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", type=int, nargs="*",
                        help="indices into common.CASES (default: all)")
    common.add_result_arguments(parser, "openvino")
    args = parser.parse_args()
    import openvino as ov

    rows = []
    cases = [common.CASES[i] for i in args.cases] if args.cases else common.CASES
    for full_shape, filters, kernel, stride, padding in cases:
        shape = tuple(full_shape[1:])
        case = common.case_label(((None, *shape), filters, kernel, stride, padding))
        compiled = {path: openvino.compile(model) for path, model in
                    _models(shape, filters, kernel, stride, padding).items()}
        for batch in args.batches:
            times = {path: [] for path in compiled}
            for _ in range(args.rounds):  # interleaved against the machine's drift
                for path, model in compiled.items():
                    times[path].append(openvino.latency_ms(model, batch, args.repeats))
            ms = {path: float(np.median(t)) for path, t in times.items()}
            ours = min((path for path in ms if path != BUILTIN), key=ms.get)
            held = formats.get("openvino").lowering.name[rule.kernel_relation(
                (kernel,) * 3, (stride,) * 3)]
            rows.append({"case": case, "batch": batch, "ms": ms, "fastest_ours": ours,
                         "fastest_ours_over_builtin": ms[ours] / ms[BUILTIN],
                         "ir_lowering": held, "ir_over_builtin": ms[held] / ms[BUILTIN]})
            print(f"{case:<40} batch {batch}: " + "  ".join(
                f"{path} {value:.2f}" for path, value in ms.items())
                + f"  | {ours}/{BUILTIN}: {ms[ours] / ms[BUILTIN]:.2f}"
                + f"  | the IR's {held}: {ms[held] / ms[BUILTIN]:.2f}", flush=True)
    result = dict(common.run_record(), threads=2, precision="f32", repeats=args.repeats,
                  rounds=args.rounds, openvino=ov.__version__, rows=rows)
    common.write_result(result, common.result_path(args.out, args.label))


if __name__ == "__main__":
    main()
