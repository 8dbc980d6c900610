"""Float, post-training int8, QAT int8, 50% pruned and 16-cluster TFLite files, side by side.

A small synthetic volumetric task: upsample a coarse 8^3 volume of Gaussian
blobs (with noise) to the 16^3 volume it came from, with a two-layer decoder
of Conv3DTranspose. Each variant is trained or fine-tuned from the same float
model, converted to TFLite and measured in one run: held-out error (PSNR of
the 16^3 prediction against the clean volume), gzipped file size and LiteRT
latency at batch 1.

tfmot builds on tf_keras, so this runs under it:

    TF_USE_LEGACY_KERAS=1 python benchmarks/bench_quantization.py
"""

import argparse
import gzip
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_conv3dt  # noqa: E402
from tf_conv3dt import quantization  # noqa: E402
from tf_conv3dt._keras import LEGACY_KERAS, keras  # noqa: E402
from tf_conv3dt.export import tflite  # noqa: E402

COARSE, FINE = 8, 16


def blobs(count, rng):
    """(coarse noisy input, fine clean target) pairs of random Gaussian blobs."""
    grid = np.stack(np.meshgrid(*[np.arange(FINE)] * 3, indexing="ij"), -1).astype("float32")
    fine = np.zeros((count, FINE, FINE, FINE), "float32")
    for volume in fine:
        for _ in range(rng.integers(2, 5)):
            center = rng.uniform(2, FINE - 2, 3)
            width = rng.uniform(1.0, 2.5)
            volume += np.exp(-((grid - center) ** 2).sum(-1) / (2 * width ** 2))
    coarse = fine.reshape(count, COARSE, 2, COARSE, 2, COARSE, 2).mean(axis=(2, 4, 6))
    coarse += rng.normal(0, 0.05, coarse.shape).astype("float32")
    return coarse[..., None], fine[..., None]


def decoder():
    inputs = keras.Input((COARSE, COARSE, COARSE, 1))
    hidden = tf_conv3dt.Conv3DTranspose(16, 4, 2, padding="same", activation="relu",
                                        name="up")(inputs)
    outputs = tf_conv3dt.Conv3DTranspose(1, 3, 1, padding="same", name="head")(hidden)
    return keras.Model(inputs, outputs)


def psnr(prediction, target):
    mse = np.mean((np.asarray(prediction) - target) ** 2)
    return float(10 * np.log10(target.max() ** 2 / mse))


def copy_of(model):
    """A copy with the same weights: tfmot's wrappers share the layers they wrap."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def fine_tune(model, x, y, epochs, callbacks=()):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=list(callbacks))
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fine-tune-epochs", type=int, default=8)
    args = parser.parse_args()
    if not LEGACY_KERAS:
        raise SystemExit("run with TF_USE_LEGACY_KERAS=1: tfmot prunes and clusters tf_keras "
                         "models")
    import tensorflow_model_optimization as tfmot

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x, y = blobs(args.train, rng)
    x_test, y_test = blobs(64, rng)
    shape = (1, COARSE, COARSE, COARSE, 1)

    model = fine_tune(decoder(), x, y, args.epochs)
    files = {"float32": tflite.convert(model, "float32", shape),
             "post-training int8": tflite.convert(model, "int8", shape, calibration=x[:128])}

    qat = fine_tune(quantization.quantize_model(model), x, y, args.fine_tune_epochs)
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)  # the standard flow
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    files["QAT int8"] = converter.convert()

    sparsity = tfmot.sparsity.keras
    pruned = sparsity.prune_low_magnitude(
        copy_of(model),
        pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1))
    fine_tune(pruned, x, y, args.fine_tune_epochs, [sparsity.UpdatePruningStep()])
    files["50% pruned"] = tflite.convert(sparsity.strip_pruning(pruned), "float32", shape)

    clustering = tfmot.clustering.keras
    clustered = clustering.cluster_weights(
        copy_of(model), number_of_clusters=16,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS)
    fine_tune(clustered, x, y, args.fine_tune_epochs)
    files["16 clusters"] = tflite.convert(clustering.strip_clustering(clustered), "float32",
                                          shape)

    print(f"TensorFlow {tf.__version__}, tf_keras, tfmot {tfmot.__version__}; "
          f"{args.train} training volumes, 64 held out; Keras float model PSNR "
          f"{psnr(model(x_test), y_test):.2f} dB")
    print(f"{'variant':<20} {'PSNR dB':>8} {'gzip KiB':>9} {'LiteRT ms':>10}")
    for name, flatbuffer in files.items():
        prediction = tflite.run(flatbuffer, x_test)
        print(f"{name:<20} {psnr(prediction, y_test):8.2f} "
              f"{len(gzip.compress(flatbuffer)) / 1024:9.1f} "
              f"{tflite.latency_ms(flatbuffer):10.3f}", flush=True)


if __name__ == "__main__":
    main()
