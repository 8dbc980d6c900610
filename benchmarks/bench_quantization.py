"""The tutorials' U-Net as float, int8, QAT, pruned + QAT and clustered + QAT TFLite files.

The segmentation task of tutorials 2 and 4 (``tf_conv3dt.examples``: noisy
19^3 volumes holding one shape, and its mask), with the same U-Net. Every
variant starts from the same float model and ends in the user's own
converter (``tf.lite.TFLiteConverter.from_keras_model``, with
``Optimize.DEFAULT`` and a representative dataset of training volumes for
the int8 files): held-out Dice of the file run by LiteRT, gzipped size,
LiteRT latency at batch 1 (2 threads, XNNPACK; each file's lowest median
over interleaved rounds) and the file's float compute ops. The QAT kernel
grid is one scale per stride phase and filter, what the converter gives each
FULLY_CONNECTED (docs/quantization.md explains why there is no per-tensor
grid). Pruning and clustering (of the Conv3DTranspose layers, the ones QAT
quantizes) fine-tune first, then QAT keeps their zeros or centroids
(``preserve_sparsity``, ``preserve_clusters``).

tfmot builds on tf_keras, so this runs under it:

    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_quantization.py

It writes its result to results/quantization/ (``common.result_path``).
"""

import argparse
import gzip
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_conv3dt  # noqa: E402
from tf_conv3dt import examples, quantization  # noqa: E402
from tf_conv3dt._keras import LEGACY_KERAS, keras  # noqa: E402
from tf_conv3dt.export import tflite  # noqa: E402

import common  # noqa: E402

SIZE, FILTERS = 19, (8, 16, 32)


def fine_tuned(model, epochs, x, y, wrap=None, callbacks=()):
    """A copy of ``model`` (weights copied: tfmot's wrappers would change the
    original's), ``wrap`` applied, trained ``epochs`` more epochs."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy = copy if wrap is None else wrap(copy)
    copy.compile(optimizer=keras.optimizers.Adam(1e-3), loss=examples.soft_dice_crossentropy)
    copy.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=list(callbacks))
    return copy


def converted(model, calibration=None):
    """The user's own conversion: float, or int8 with ``calibration``."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if calibration is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([v[None]] for v in calibration)
    return converter.convert()


def float_compute_ops(flatbuffer):
    """The file's ops that compute in float, by name (DEQUANTIZE and QUANTIZE,
    which only convert, left out)."""
    return sorted({name for name, inputs, outputs in tflite.op_list(flatbuffer)
                   if "float32" in outputs and name not in ("DEQUANTIZE", "QUANTIZE")})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=192)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fine-tune-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds")
    common.add_result_arguments(parser, "quantization")
    args = parser.parse_args()
    if not LEGACY_KERAS:
        raise SystemExit("run with TF_USE_LEGACY_KERAS=1: tfmot prunes and clusters tf_keras "
                         "models")
    import tensorflow_model_optimization as tfmot

    keras.utils.set_random_seed(0)
    volumes, masks, _ = examples.shapes_dataset(args.train + args.held_out, SIZE, seed=0)
    x, y = volumes[:args.train], masks[:args.train]
    x_test, y_test = volumes[args.train:], masks[args.train:]
    calibration = x[:64]
    epochs = args.fine_tune_epochs

    model = examples.unet(SIZE, FILTERS)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=examples.soft_dice_crossentropy)
    model.fit(x, y, epochs=args.epochs, batch_size=8, verbose=0)
    keras_dice = float(np.mean(examples.dice(y_test, model.predict(x_test, verbose=0))))
    print(f"float Keras model: held-out Dice {keras_dice:.4f}", flush=True)

    files = {"float32": converted(model),
             "post-training int8": converted(model, calibration)}
    files["QAT int8"] = converted(fine_tuned(model, epochs, x, y, quantization.quantize_model),
                                  calibration)

    def our_layers(wrap):
        """``wrap`` applied to each Conv3DTranspose alone: QAT quantizes only
        those (tfmot has no scheme for Conv3D, which TFLite runs in float),
        so only their zeros or clusters can be kept through it."""
        return lambda copy: keras.models.clone_model(copy, clone_function=lambda layer: (
            wrap(layer) if isinstance(layer, tf_conv3dt.Conv3DTranspose) else layer))

    sparsity = tfmot.sparsity.keras
    pruned = sparsity.strip_pruning(fine_tuned(
        model, epochs, x, y, our_layers(lambda layer: sparsity.prune_low_magnitude(
            layer, pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1))),
        [sparsity.UpdatePruningStep()]))
    files["50% pruned + QAT int8"] = converted(fine_tuned(
        pruned, epochs, x, y,
        lambda copy: quantization.quantize_model(copy, preserve_sparsity=True)), calibration)

    clustering = tfmot.clustering.keras
    clustered = clustering.strip_clustering(fine_tuned(
        model, epochs, x, y, our_layers(lambda layer: clustering.cluster_weights(
            layer, number_of_clusters=16,
            cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS))))
    files["16 clusters + QAT int8"] = converted(fine_tuned(
        clustered, epochs, x, y,
        lambda copy: quantization.quantize_model(copy, preserve_clusters=True)), calibration)

    # Each file's lowest median over interleaved rounds: the machine's noise
    # then does not fall on one file alone.
    latencies = {name: [] for name in files}
    for _ in range(args.rounds):
        for name, flatbuffer in files.items():
            latencies[name].append(tflite.latency_ms(flatbuffer))
    rows = {}
    print(f"{'variant':<24} {'Dice':>7} {'gzip KiB':>9} {'LiteRT ms':>10}  float compute ops")
    for name, flatbuffer in files.items():
        rows[name] = {
            "dice": float(np.mean(examples.dice(y_test, tflite.run(flatbuffer, x_test)))),
            "gzip_kib": len(gzip.compress(flatbuffer)) / 1024,
            "litert_ms": min(latencies[name]),
            "float_compute_ops": float_compute_ops(flatbuffer)}
        row = rows[name]
        print(f"{name:<24} {row['dice']:7.4f} {row['gzip_kib']:9.1f} {row['litert_ms']:10.3f}  "
              f"{' '.join(row['float_compute_ops']) or '-'}", flush=True)

    result = dict(common.run_record(), tfmot=tfmot.__version__,
                  arguments={k: v for k, v in vars(args).items() if k not in ("out", "label")},
                  keras_dice=keras_dice, rows=rows)
    common.write_result(result, common.result_path(args.out, args.label))


if __name__ == "__main__":
    main()
