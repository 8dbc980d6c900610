"""Quantization, pruning and clustering: tfmot under tf_keras, our own QAT under Keras 3."""

import os

import numpy as np
import pytest

import tf_conv3dt
from tf_conv3dt import quantization
from tf_conv3dt._keras import LEGACY_KERAS, keras
from markers import smoke
from reference import assert_close, np_conv3d_transpose
from tflite_checks import assert_integer_tflite, compute_ops


def _model():
    inputs = keras.Input((4, 3, 5, 6), name="voxels")
    hidden = tf_conv3dt.Conv3DTranspose(4, 3, 2, padding="same", activation="relu",
                                        name="up1")(inputs)
    outputs = tf_conv3dt.Conv3DTranspose(2, 2, 2, name="up2")(hidden)
    return keras.Model(inputs, outputs)


def _fake_quant(values, low, high, levels=256):
    """Rounds to ``levels`` evenly spaced values over [low, high] (TF's fake quant,
    without its zero-point nudge, which moves the grid by under one step)."""
    step = (high - low) / (levels - 1)
    return np.round((np.clip(values, low, high) - low) / step) * step + low


@pytest.mark.skipif(not LEGACY_KERAS, reason="tfmot quantizes tf_keras models; "
                    "the Keras 3 behaviour is test_keras3_is_refused_with_a_clear_error")
class TestQuantizationAwareTraining:
    @smoke
    def test_layers_are_wrapped_and_outputs_follow_the_quantized_reference(self, rng):
        model = _model()
        qat = quantization.quantize_model(model)
        wrapped = [layer for layer in qat.layers if hasattr(layer, "quantize_config")]
        assert [w.layer.name for w in wrapped] == ["up1", "up2"]
        assert all(isinstance(w.layer, tf_conv3dt.Conv3DTranspose) for w in wrapped)
        x = rng.uniform(size=(2, 4, 3, 5, 6)).astype("float32")
        qat(x, training=True)  # one training-mode pass sets the activation ranges
        ranges = {w.name.split("/")[-1].split(":")[0]: float(np.asarray(w))
                  for w in qat.get_layer("quant_up1").weights + qat.get_layer("quantize_layer").weights
                  if w.shape.rank == 0 and "optimizer_step" not in w.name}
        first = model.get_layer("up1")
        # NumPy reference of the first layer with every quantizer: input over its
        # range, kernel symmetric 8-bit narrow range, activation over its range.
        kernel_max = ranges["kernel_max"]
        kernel = _fake_quant(first.kernel.numpy(), -kernel_max, kernel_max, levels=255)
        inputs = _fake_quant(x, ranges["quantize_layer_min"], ranges["quantize_layer_max"])
        low, high = ranges["post_activation_min"], ranges["post_activation_max"]
        expected = _fake_quant(np.maximum(np_conv3d_transpose(
            inputs, kernel, first.bias.numpy(), (2, 2, 2), "same"), 0), low, high)
        hidden = np.asarray(keras.Model(qat.inputs, qat.get_layer("quant_up1").output)(x))
        step = (high - low) / 255
        assert np.abs(hidden - expected).max() <= step
        # And quantization is really applied: the float layer is not on the grid.
        float_hidden = np.asarray(keras.Model(model.inputs, first.output)(x))
        assert np.abs(hidden - float_hidden).max() > 0.1 * step

    def test_trains_saves_and_exports_integer_tflite(self, rng, tmp_path):
        # Seeded: spread over workers, the tests before it vary, and so would
        # the initial weights (once 0.74 of the first loss, not under 0.7).
        keras.utils.set_random_seed(0)
        x, y = _teacher_data(rng)
        qat = quantization.quantize_model(_model())
        qat.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
        history = qat.fit(x, y, epochs=30, batch_size=8, verbose=0)
        assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]

        path = str(tmp_path / "qat.h5")
        qat.save(path)
        with quantization.quantize_scope():
            restored = keras.models.load_model(path)
        assert_close(restored(x[:2]), qat(x[:2]), rel=1e-6)

        from tf_conv3dt.export import tflite
        flatbuffer = tflite.convert(qat, "int8", (1, 4, 3, 5, 6), calibration=x)
        assert_integer_tflite(flatbuffer)


def _assert_follows(converted, simulated, step):
    """The int8 file against the fake-quantized model it came from: 98% of the
    outputs within one step of the output quantizer, none off by more than 3%
    of the output range. (The products are requantized before the bias and
    activation, at the pre-activation range, so int8 rounding can differ from
    the float simulation by one of those coarser steps: 0.1-1.2% of the
    outputs over five initialisations, so a 99% bound failed on one.)"""
    assert np.mean(np.abs(converted - simulated) <= 1.01 * step) >= 0.98
    assert _range_fraction(converted, simulated) <= 0.03


def _range_fraction(actual, expected):
    expected = np.asarray(expected)
    return np.abs(np.asarray(actual) - expected).max() / (expected.max() - expected.min())


@pytest.mark.skipif(not LEGACY_KERAS, reason="tfmot quantizes tf_keras models")
def test_qat_converts_to_integer_tflite_with_the_standard_converter(rng):
    """quantize_model, fit, then TFLiteConverter.from_keras_model + Optimize.DEFAULT
    and nothing else: every compute op is int8 (the layer traces itself through
    the int8-oriented lowering), and the file follows the QAT model."""
    import tensorflow as tf
    from tf_conv3dt.export import tflite
    # Seeded: how many outputs land one step off depends on the initial
    # weights (see _assert_follows), and an unseeded run should not decide.
    keras.utils.set_random_seed(0)
    x, y = _teacher_data(rng)
    qat = quantization.quantize_model(_model())
    qat.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    qat.fit(x, y, epochs=2, batch_size=8, verbose=0)

    @tf.function
    def settle_ranges():
        # The moving-average ranges (decay 0.999, from tfmot's initial +-6)
        # settle in thousands of steps, a long training's worth.
        for _ in tf.range(10000):
            qat(x[:8], training=True)

    settle_ranges()
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True)
    low, high = (float(np.asarray(w)) for w in qat.get_layer("quant_up2").weights
                 if "post_activation_m" in w.name)
    _assert_follows(tflite.run(flatbuffer, x[:8]), np.asarray(qat(x[:8])), (high - low) / 255)


@smoke
def test_post_training_int8_with_the_users_converter(rng, tmp_path):
    """A plain float model, the user's own converter with a representative
    dataset, traced inside tf_conv3dt.forced_implementation: all int8, close to
    the float model."""
    import tensorflow as tf
    from tf_conv3dt.export import tflite
    x, _ = _teacher_data(rng)
    model = _model()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with tf_conv3dt.forced_implementation("gemm", one_product_per_phase=True):
        flatbuffer = converter.convert()
    assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True)
    assert _range_fraction(tflite.run(flatbuffer, x[:8]), model(x[:8])) <= 0.02


@pytest.mark.skipif(LEGACY_KERAS, reason="under tf_keras, quantize_model goes through tfmot")
class TestKeras3QuantizationAwareTraining:
    def test_layer_follows_the_quantized_reference(self, rng):
        """With quantization="qat", inference is the float layer with the kernel
        on its symmetric 8-bit grid and the products and output on their
        learned 8-bit ranges."""
        model = quantization.quantize_model(_model())
        first = model.get_layer("up1")
        assert first.quantization == "qat" and first.get_config()["quantization"] == "qat"
        x = rng.uniform(size=(4, 4, 3, 5, 6)).astype("float32")
        model(x, training=True)  # one training-mode pass sets the ranges
        ranges = {w.name: float(np.asarray(w)) for w in first.weights if len(w.shape) == 0}
        bound = np.abs(first.kernel.numpy()).max()
        kernel = _fake_quant(first.kernel.numpy(), -bound, bound, levels=255)
        products = _fake_quant(np_conv3d_transpose(x, kernel, None, (2, 2, 2), "same"),
                               ranges["conv_output_min"], ranges["conv_output_max"])
        expected = _fake_quant(np.maximum(products + first.bias.numpy(), 0),
                               ranges["output_min"], ranges["output_max"])
        # A rounding tie can fall either way on each grid (TF nudges the zero
        # point): one step of the products' grid plus one of the output's.
        steps = sum((ranges[f"{t}_max"] - ranges[f"{t}_min"]) / 255
                    for t in ("conv_output", "output"))
        assert np.abs(np.asarray(first(x)) - expected).max() <= steps
        float_model = _model()
        assert np.abs(np.asarray(first(x)) - np.asarray(
            keras.Model(float_model.inputs, float_model.get_layer("up1").output)(x))).max() > 0

    def test_trains_reloads_and_converts_to_integer_tflite(self, rng, tmp_path):
        import tensorflow as tf
        from tf_conv3dt.export import tflite
        keras.utils.set_random_seed(0)
        x, y = _teacher_data(rng)
        qat = quantization.quantize_model(_model())
        qat.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        history = qat.fit(x, y, epochs=10, batch_size=8, verbose=0)
        assert history.history["loss"][-1] < 0.7 * history.history["loss"][0]
        path = str(tmp_path / "qat.keras")
        qat.save(path)
        restored = keras.models.load_model(path)
        np.testing.assert_array_equal(np.asarray(restored(x[:2])), np.asarray(qat(x[:2])))

        converter = tf.lite.TFLiteConverter.from_keras_model(qat)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # The model's input has no range of its own: calibration gives it one.
        converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()
        assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True)
        ranges = {w.name: float(np.asarray(w)) for w in qat.get_layer("up2").weights
                  if len(w.shape) == 0}
        _assert_follows(tflite.run(flatbuffer, x[:8]), np.asarray(qat(x[:8])),
                        (ranges["output_max"] - ranges["output_min"]) / 255)

    def test_layers_around_are_calibrated_by_the_converter(self, rng):
        """Dense, BatchNormalization and ReLU around a QAT layer: the converter's
        calibration quantizes them, and the whole file is int8, but for Conv3D:
        TFLite has no integer CONV_3D kernel, so it stays float32 between a
        QUANTIZE and a DEQUANTIZE."""
        import tensorflow as tf
        inputs = keras.Input((4, 3, 5, 6))
        hidden = keras.layers.Conv3D(6, 3, padding="same")(inputs)
        hidden = keras.layers.Dense(5)(hidden)
        hidden = keras.layers.BatchNormalization()(hidden)
        hidden = keras.layers.ReLU()(hidden)
        hidden = tf_conv3dt.Conv3DTranspose(4, 3, 2, padding="same", activation="relu")(hidden)
        outputs = keras.layers.Dense(2)(hidden)
        qat = quantization.quantize_model(keras.Model(inputs, outputs))
        x = rng.uniform(size=(16, 4, 3, 5, 6)).astype("float32")
        qat(x, training=True)
        converter = tf.lite.TFLiteConverter.from_keras_model(qat)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(len(x)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        flatbuffer = converter.convert()
        ops = compute_ops(flatbuffer, float_boundary=True, shape_arithmetic=True)
        assert [name for name, inputs, _ in ops if "float32" in inputs] == ["CONV_3D"]
        assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True,
                              exclude=("CONV_3D",))
        names = {name for name, _, _ in ops}
        assert "FULLY_CONNECTED" in names and "CONV_3D_TRANSPOSE" not in names

    def test_keras_litert_export(self, rng, tmp_path):
        """Keras 3's own model.export(format="litert"): a float model inside
        forced_implementation("gemm") gives the GEMM ops; a QAT model chooses
        the int8-oriented lowering by itself and, with the converter options,
        gives an integer file."""
        import tensorflow as tf
        x, _ = _teacher_data(rng)
        model = _model()
        with tf_conv3dt.forced_implementation("gemm"):
            model.export(str(tmp_path / "float.tflite"), format="litert", verbose=False)
        float_ops = compute_ops((tmp_path / "float.tflite").read_bytes(), float_boundary=True,
                                shape_arithmetic=True)
        names = {name for name, _, _ in float_ops}
        assert "FULLY_CONNECTED" in names and "CONV_3D_TRANSPOSE" not in names
        qat = quantization.quantize_model(model)
        qat(x, training=True)
        qat.export(str(tmp_path / "qat.tflite"), format="litert", verbose=False,
                   optimizations=[tf.lite.Optimize.DEFAULT],
                   representative_dataset=lambda: ([x[i:i + 1]] for i in range(len(x))))
        assert_integer_tflite((tmp_path / "qat.tflite").read_bytes(), float_boundary=True,
                              shape_arithmetic=True)

    def test_exports_with_the_export_script(self, rng, tmp_path):
        import subprocess
        import sys
        # Seeded: a QAT model's float TFLite files keep its fake quantization,
        # and where LiteRT's float rounding puts one output across a step
        # boundary (some initialisations here) the float files miss the
        # export's 1e-5 tolerance by that step, and nothing is published.
        keras.utils.set_random_seed(0)
        x, y = _teacher_data(rng, samples=16)
        qat = quantization.quantize_model(_model())
        qat.compile(optimizer="adam", loss="mse")
        qat.fit(x, y, epochs=1, batch_size=8, verbose=0)
        qat.save(tmp_path / "qat.keras")
        np.save(tmp_path / "calibration.npy", x)
        script = os.path.join(os.path.dirname(__file__), "..", "export", "export_model.py")
        result = subprocess.run(
            [sys.executable, script, "--out", str(tmp_path / "out"), "--model",
             str(tmp_path / "qat.keras"), "--formats", "tflite", "--calibration-data",
             str(tmp_path / "calibration.npy"), "--quiet"],
            capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        int8 = next((tmp_path / "out").rglob("*int8*.tflite")).read_bytes()
        assert_integer_tflite(int8, float_boundary=True, shape_arithmetic=True)


@pytest.mark.skipif(LEGACY_KERAS, reason="quantize() is Keras 3's layer protocol")
class TestKeras3Quantize:
    def _model(self):
        inputs = keras.Input((4, 3, 5, 6))
        hidden = keras.layers.Dense(6)(inputs)
        hidden = tf_conv3dt.Conv3DTranspose(4, 3, 2, padding="same", activation="relu",
                                            bias_initializer="random_normal",
                                            name="up1")(hidden)
        outputs = tf_conv3dt.Conv3DTranspose(2, 2, 2, name="up2")(hidden)
        return keras.Model(inputs, outputs)

    def test_int8_quantizes_our_layers_with_dense(self, rng, tmp_path):
        import tensorflow as tf
        model = self._model()
        x = rng.uniform(size=(2, 4, 3, 5, 6)).astype("float32")
        float_kernel = model.get_layer("up1").kernel.numpy()
        float_y = np.asarray(model(x))
        model.quantize("int8")
        for name in ("dense", "up1", "up2"):
            assert model.get_layer(name).dtype_policy.name == "int8_from_float32", name
        up1 = model.get_layer("up1")
        assert up1.kernel.dtype == "int8" and up1.kernel_scale.shape == (4,)
        # One scale per filter: the largest magnitude maps to 127.
        np.testing.assert_allclose(
            up1.kernel_scale.numpy(), 127 / np.abs(float_kernel).max(axis=(0, 1, 2, 4)),
            rtol=1e-6)
        hidden = np.asarray(model.get_layer("dense")(x))
        step = np.abs(hidden).max() / 127
        inputs = np.round(hidden / step) * step
        kernel = up1.kernel.numpy() / up1.kernel_scale.numpy()[:, None]
        expected = np.maximum(np_conv3d_transpose(inputs, kernel, up1.bias.numpy(), (2, 2, 2),
                                                  "same"), 0)
        assert_close(up1(hidden), expected)
        y = np.asarray(model(x))
        assert _range_fraction(y, float_y) <= 0.02

        path = str(tmp_path / "int8.keras")
        model.save(path)
        restored = keras.models.load_model(path)
        assert restored.get_layer("up1").kernel.dtype == "int8"
        np.testing.assert_array_equal(np.asarray(restored(x)), y)
        model.export(str(tmp_path / "saved"), verbose=False)
        served = tf.saved_model.load(str(tmp_path / "saved"))
        assert_close(served.serve(x), y, rel=1e-6)

    @pytest.mark.parametrize("mode", ["int4", "float8"])
    def test_other_modes_leave_the_layer_float_with_a_clear_warning(self, mode, rng):
        model = self._model()
        x = rng.uniform(size=(1, 4, 3, 5, 6)).astype("float32")
        before = np.asarray(model(x))
        with pytest.warns(UserWarning, match=r"supports quantize\('int8'\) only"):
            model.quantize(mode)
        assert model.get_layer("up1").dtype_policy.name == "float32"
        assert model.get_layer("dense").dtype_policy.quantization_mode == mode
        assert model.get_layer("up1").kernel.dtype == "float32"
        assert np.isfinite(np.asarray(model(x))).all() and before.shape == model(x).shape


def test_tfmot_features_under_keras3_are_refused_with_a_clear_error():
    if LEGACY_KERAS:
        assert quantization.quantize_config() is not None
        return
    for feature in (quantization.quantize_config, quantization.quantize_scope):
        with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
            feature()


def _gzipped_size(arrays):
    import gzip
    import io
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return len(gzip.compress(buffer.getvalue()))


def _teacher_data(rng, samples=32):
    x = rng.uniform(size=(samples, 4, 3, 5, 6)).astype("float32")
    return x, np.asarray(_model()(x))


@pytest.mark.skipif(not LEGACY_KERAS, reason="tfmot prunes and clusters tf_keras models; "
                    "under Keras 3 tfmot does not import (model-optimization#1119)")
class TestPruningAndClustering:
    @smoke
    def test_prune_low_magnitude_reaches_the_scheduled_sparsity(self, rng):
        import tensorflow_model_optimization as tfmot
        sparsity = tfmot.sparsity.keras
        x, y = _teacher_data(rng)
        model = _model()
        dense_size = _gzipped_size(model.get_weights())
        pruned = sparsity.prune_low_magnitude(
            model, pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1))
        assert [type(layer.layer).__name__ for layer in pruned.layers[1:]] == \
            ["Conv3DTranspose", "Conv3DTranspose"]
        pruned.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        pruned.fit(x, y, epochs=3, batch_size=8, verbose=0,
                   callbacks=[sparsity.UpdatePruningStep()])
        stripped = sparsity.strip_pruning(pruned)
        for name in ("up1", "up2"):
            layer = stripped.get_layer(name)
            assert isinstance(layer, tf_conv3dt.Conv3DTranspose)
            kernel = layer.kernel.numpy()
            assert abs(np.mean(kernel == 0) - 0.5) < 0.05, np.mean(kernel == 0)
            assert np.all(layer.bias.numpy() != 0)  # the bias is not pruned
        first = stripped.get_layer("up1")
        assert_close(first(x[:2]), np.maximum(np_conv3d_transpose(
            x[:2], first.kernel.numpy(), first.bias.numpy(), (2, 2, 2), "same"), 0))
        assert _gzipped_size(stripped.get_weights()) < 0.8 * dense_size

    def test_pruning_preserving_qat_keeps_the_zeros(self, rng):
        """Prune, strip, then quantize_model(preserve_sparsity=True): after more
        training the kernel the layer computes with keeps the pruned zeros;
        plain QAT fills them in."""
        import tensorflow_model_optimization as tfmot
        sparsity = tfmot.sparsity.keras
        x, y = _teacher_data(rng)
        pruned = sparsity.prune_low_magnitude(
            _model(), pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1))
        pruned.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        pruned.fit(x, y, epochs=2, batch_size=8, verbose=0,
                   callbacks=[sparsity.UpdatePruningStep()])
        stripped = sparsity.strip_pruning(pruned)
        for preserve, expected in ((True, lambda zeros: zeros >= 0.5),
                                   (False, lambda zeros: zeros < 0.2)):
            qat = quantization.quantize_model(stripped, preserve_sparsity=preserve)
            qat.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
            qat.fit(x, y, epochs=2, batch_size=8, verbose=0)
            qat(x[:1])  # the wrapper hands the layer its quantized kernel
            zeros = np.mean(np.asarray(qat.get_layer("quant_up1").layer.kernel) == 0)
            assert expected(zeros), (preserve, zeros)

    def test_cluster_weights_leaves_at_most_n_kernel_values(self, rng):
        import tensorflow_model_optimization as tfmot
        clustering = tfmot.clustering.keras
        x, y = _teacher_data(rng)
        clustered = clustering.cluster_weights(
            _model(), number_of_clusters=8,
            cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS)
        clustered.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
        history = clustered.fit(x, y, epochs=3, batch_size=8, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        stripped = clustering.strip_clustering(clustered)
        for name in ("up1", "up2"):
            layer = stripped.get_layer(name)
            assert isinstance(layer, tf_conv3dt.Conv3DTranspose)
            assert len(np.unique(layer.kernel.numpy())) <= 8
        second = stripped.get_layer("up2")
        hidden = stripped.get_layer("up1")(x[:2])
        assert_close(stripped(x[:2]), np_conv3d_transpose(
            hidden, second.kernel.numpy(), second.bias.numpy(), (2, 2, 2), "valid"))


def test_importing_tf_conv3dt_does_not_import_tfmot():
    import subprocess
    import sys
    code = ("import sys, tf_conv3dt, tf_conv3dt.quantization; "
            "print(any(m.startswith('tensorflow_model_optimization') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split()[-1] == "False"
