"""What a dynamic batch costs in LiteRT: static-batch and dynamic-batch TFLite
files of the reference model, each mode, timed at the same batch sizes.

A static file is converted for each batch size (its batch is fixed); the
dynamic one (shape signature -1, what ``export --dynamic-batch`` writes) is
converted once and resized. Both are timed in the same run, interleaved, with
LiteRT + XNNPACK on 2 threads (median of ``--repeats`` invokes):

    python benchmarks/bench_tflite_batch.py
"""

import argparse

import numpy as np

from tf_conv3dt.export import formats, models, tflite


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    model = models.reference_model()
    input_shape = models.REFERENCE_INPUT_SHAPE
    calibration = np.random.default_rng(0).uniform(size=(32, *input_shape)).astype("float32")
    print(f"{'mode':<14} {'batch':>5} {'static ms':>10} {'dynamic ms':>11} {'ratio':>6}")
    for mode in tflite.MODES:
        lowering = formats.get("tflite").lowering_of(mode, None)  # the export's
        dynamic = tflite.convert(model, mode, (None, *input_shape), lowering, calibration)
        for batch in args.batches:
            static = tflite.convert(model, mode, (batch, *input_shape), lowering, calibration)
            static_ms, dynamic_ms = [], []
            for _ in range(3):  # interleaved rounds against the machine's drift
                static_ms.append(tflite.latency_ms(static, repeats=args.repeats))
                dynamic_ms.append(tflite.latency_ms(dynamic, repeats=args.repeats, batch=batch))
            s, d = float(np.median(static_ms)), float(np.median(dynamic_ms))
            print(f"{mode:<14} {batch:>5} {s:10.3f} {d:11.3f} {d / s:6.2f}", flush=True)


if __name__ == "__main__":
    main()
