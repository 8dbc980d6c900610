"""Quantization, pruning and clustering: tfmot under tf_keras, our own QAT under Keras 3."""

import itertools
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
    outputs = tf_conv3dt.Conv3DTranspose(2, 2, 2, groups=2, name="up2")(hidden)
    return keras.Model(inputs, outputs)


def _phase_grid(kernel, strides):
    """The kernel on the int8 grids of the file's FULLY_CONNECTED weights: one
    symmetric narrow-range scale per stride phase and filter (dilation 1,
    every tap reaching the output)."""
    result = np.empty_like(kernel)
    for phase in itertools.product(*map(range, strides)):
        taps = tuple(slice(r, None, s) for r, s in zip(phase, strides))
        bound = np.abs(kernel[taps]).max(axis=(0, 1, 2, 4), keepdims=True)
        result[taps] = _fake_quant(kernel[taps], -bound, bound, levels=255)
    return result


def _fake_quant(values, low, high, levels=256):
    """TF's FakeQuantWithMinMaxVars in NumPy: ``levels`` evenly spaced values
    over [low, high], moved (by under one step) so that 0 is one of them."""
    step = (high - low) / (levels - 1)
    zero = np.clip(np.round(-low / step), 0, levels - 1)
    low, high = -zero * step, (levels - 1 - zero) * step
    return np.floor((np.clip(values, low, high) - low) / step + 0.5) * step + low


@pytest.mark.skipif(not LEGACY_KERAS, reason="tfmot quantizes tf_keras models; "
                    "Keras 3's own QAT is TestKeras3QuantizationAwareTraining")
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
                  for w in (qat.get_layer("quant_up1").weights
                            + qat.get_layer("quantize_layer").weights)
                  if w.shape.rank == 0 and "optimizer_step" not in w.name}
        first = model.get_layer("up1")
        # NumPy reference of the first layer with every quantizer: input over its
        # range, kernel on the products' grids, activated output over its range.
        kernel = _phase_grid(first.kernel.numpy(), (2, 2, 2))
        inputs = _fake_quant(x, ranges["quantize_layer_min"], ranges["quantize_layer_max"])
        low, high = ranges["output_min"], ranges["output_max"]
        expected = _fake_quant(np.maximum(np_conv3d_transpose(
            inputs, kernel, first.bias.numpy(), (2, 2, 2), "same"), 0), low, high)
        hidden = np.asarray(keras.Model(qat.inputs, qat.get_layer("quant_up1").output)(x))
        step = (high - low) / 255
        # float32 against float64 may round a value to the neighbouring step.
        assert np.abs(hidden - expected).max() <= 1.01 * step
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

        from tf_conv3dt.export import formats, tflite
        flatbuffer = tflite.convert(qat, "int8", (1, 4, 3, 5, 6),
                                    formats.get("tflite").lowering_of("int8", None),
                                    calibration=x)
        assert_integer_tflite(flatbuffer)


def _assert_follows(converted, simulated, step):
    """The int8 file against the fake-quantized model it came from, in steps
    of the output's int8 grid: at least 99.9% within one step, none beyond
    two. Each output is one int32 accumulation requantized once, which the
    fake quantization computes in float: they differ where float rounding
    puts a value on the other side of a rounding boundary."""
    steps = np.abs(np.asarray(converted) - np.asarray(simulated)) / step
    assert np.mean(steps <= 1.01) >= 0.999, np.histogram(steps, [0, 0.5, 1.01, 2.01, np.inf])
    assert steps.max() <= 2.01, steps.max()


def _mixed_model():
    """Overlapping and non-overlapping kernels, "same" and "valid", relu and
    linear, one group, two and depthwise, biases away from zero."""
    inputs = keras.Input((3, 3, 3, 2), name="voxels")
    hidden = inputs
    for name, filters, kernel, stride, padding, activation, groups in (
            ("up1", 6, 3, 2, "same", "relu", 1), ("up2", 4, 2, 1, "valid", "relu", 2),
            ("up3", 4, 2, 2, "valid", None, 4), ("up4", 2, 3, 1, "same", None, 1)):
        hidden = tf_conv3dt.Conv3DTranspose(
            filters, kernel, stride, padding=padding, activation=activation, groups=groups,
            bias_initializer=keras.initializers.RandomNormal(stddev=0.3), name=name)(hidden)
    return keras.Model(inputs, hidden)


def _output_step(qat, name):
    """One step of the int8 grid of layer ``name``'s output in a QAT model."""
    layer = qat.get_layer(name if not LEGACY_KERAS else f"quant_{name}")
    ends = {w.name.split("/")[-1].split(":")[0]: float(np.asarray(w)) for w in layer.weights
            if len(w.shape) == 0}
    return (ends["output_max"] - ends["output_min"]) / 255


# The decay of tfmot's moving-average ranges (MovingAverageQuantizer's, fixed).
TFMOT_EMA_DECAY = 0.999


def _settle_tfmot_ranges(qat, batch):
    """Puts every moving-average range of a tfmot QAT model where thousands
    of training steps on ``batch`` would take it (tfmot's start at +-6 and
    move by 0.1% a step): the batch's own range, solved for from each step's
    update, one step per layer so that every layer sees its input settled."""
    ranges = [w for layer in qat.layers if layer.name.startswith("quant_")
              for w in layer.non_trainable_weights
              if w.name.split("/")[-1].split(":")[0].endswith(("_min", "_max"))]
    for _ in range(len(qat.layers)):
        before = [w.numpy() for w in ranges]
        qat(batch, training=True)
        for w, old in zip(ranges, before):
            w.assign((w.numpy() - TFMOT_EMA_DECAY * old) / (1 - TFMOT_EMA_DECAY))


@pytest.mark.parametrize("representative", [False, True], ids=["no-dataset", "dataset"])
def test_int8_file_equals_its_qat_model(representative, rng):
    """quantize_model, a short fit, and the plain converter (with or without
    a representative dataset): the integer file computes what the QAT model
    computes, to within the rounding of the output grid (_assert_follows)."""
    import tensorflow as tf
    from tf_conv3dt.export import tflite
    keras.utils.set_random_seed(0)
    x = rng.uniform(-1, 1, size=(40, 3, 3, 3, 2)).astype("float32")
    train, held_out = x[:32], x[32:]
    float_model = _mixed_model()
    targets = np.asarray(float_model(train)) * 0.8
    qat = quantization.quantize_model(float_model)
    qat.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    qat.fit(train, targets, epochs=2, batch_size=8, verbose=0)
    if LEGACY_KERAS:
        _settle_tfmot_ranges(qat, train[:8])
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative:
        converter.representative_dataset = lambda: ([v[None]] for v in train)
    flatbuffer = converter.convert()
    assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True)
    _assert_follows(tflite.run(flatbuffer, held_out), np.asarray(qat(held_out)),
                    _output_step(qat, "up4"))


def _range_fraction(actual, expected):
    expected = np.asarray(expected)
    return np.abs(np.asarray(actual) - expected).max() / (expected.max() - expected.min())


@pytest.mark.skipif(LEGACY_KERAS, reason="under tf_keras, quantize_model goes through tfmot")
class TestKeras3QuantizationAwareTraining:
    def test_layer_follows_the_quantized_reference(self, rng):
        """With quantization="qat", inference is the float layer with the
        activated output on its learned 8-bit range and the kernel on its
        products' int8 grids; quantize_model puts an InputQuantizer before
        it."""
        model = quantization.quantize_model(_model())
        first = model.get_layer("up1")
        assert first.quantization == "qat" and first.get_config()["quantization"] == "qat"
        x = rng.uniform(size=(4, 4, 3, 5, 6)).astype("float32")
        model(x, training=True)  # one training-mode pass sets the ranges
        ranges = {w.name: float(np.asarray(w)) for w in first.weights if len(w.shape) == 0}
        kernel = _phase_grid(first.kernel.numpy(), (2, 2, 2))
        assert isinstance(model.layers[1], quantization.InputQuantizer)
        expected = _fake_quant(np.maximum(np_conv3d_transpose(
            x, kernel, first.bias.numpy(), (2, 2, 2), "same"), 0),
            ranges["output_min"], ranges["output_max"])
        assert "pre_activation_min" not in ranges  # relu is fused into the products
        # float32 against float64 may round a value to the neighbouring step.
        step = (ranges["output_max"] - ranges["output_min"]) / 255
        assert np.abs(np.asarray(first(x)) - expected).max() <= 1.01 * step
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
        """Keras 3's own model.export(format="litert") of a QAT model, with the
        converter options, gives an integer file (float models:
        test_tflite_hook.py)."""
        import tensorflow as tf
        x, _ = _teacher_data(rng)
        qat = quantization.quantize_model(_model())
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
        outputs = tf_conv3dt.Conv3DTranspose(2, 2, 2, groups=2, name="up2")(hidden)
        return keras.Model(inputs, outputs)

    def test_int8_quantizes_our_layers_with_dense(self, rng, tmp_path):
        import tensorflow as tf
        model = self._model()
        x = rng.uniform(size=(2, 4, 3, 5, 6)).astype("float32")
        float_kernel = model.get_layer("up1").kernel.numpy()
        grouped_kernel = model.get_layer("up2").kernel.numpy()
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
        # Grouped: filter f of group i is scaled over group i's input channels.
        up2 = model.get_layer("up2")
        np.testing.assert_allclose(up2.kernel_scale.numpy(), [
            127 / np.abs(grouped_kernel[..., 0, :2]).max(),
            127 / np.abs(grouped_kernel[..., 0, 2:]).max()], rtol=1e-6)
        hidden = np.asarray(up1(hidden))
        step = np.abs(hidden).max() / 127
        kernel = up2.kernel.numpy() / np.repeat(up2.kernel_scale.numpy(), 2)
        assert_close(up2(hidden), np_conv3d_transpose(
            np.round(hidden / step) * step, kernel, up2.bias.numpy(), (2, 2, 2), groups=2))
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
    for argument in ("preserve_sparsity", "preserve_clusters"):
        with pytest.raises(ValueError, match=f"{argument}=True .* needs tf_keras"):
            quantization.quantize_model(_model(), **{argument: True})


def _gzipped_size(arrays):
    import gzip
    import io
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return len(gzip.compress(buffer.getvalue()))


def _int8_file_weights(qat):
    """The plain converter's int8 file of ``qat``, asserted integer: its
    FULLY_CONNECTED weight matrices (one row per filter)."""
    import tensorflow as tf
    from tf_conv3dt.export import tflite
    converter = tf.lite.TFLiteConverter.from_keras_model(qat)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    flatbuffer = converter.convert()
    assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True)
    runner = tflite.interpreter(flatbuffer, delegates=False)
    weights = [runner.get_tensor(op["inputs"][1])
               for op in runner._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    assert weights and all(w.dtype == np.int8 and w.ndim == 2 for w in weights)
    return weights


def _clustered_to_8_values(x, y, epochs):
    """``_model()`` clustered to 8 kernel values by tfmot, fitted ``epochs``
    epochs to ``y`` and stripped: ``(stripped model, fit history)``."""
    import tensorflow_model_optimization as tfmot
    clustering = tfmot.clustering.keras
    clustered = clustering.cluster_weights(
        _model(), number_of_clusters=8,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS)
    clustered.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = clustered.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return clustering.strip_clustering(clustered), history


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
        # The bias is not pruned: tfmot masks the kernel alone. (A bias can be
        # zero after training anyway, behind a ReLU channel that never fires.)
        for wrapper in pruned.layers[1:]:
            assert [weight is wrapper.layer.kernel for weight, _, _ in wrapper.pruning_vars] \
                == [True]
        stripped = sparsity.strip_pruning(pruned)
        for name in ("up1", "up2"):
            layer = stripped.get_layer(name)
            assert isinstance(layer, tf_conv3dt.Conv3DTranspose)
            kernel = layer.kernel.numpy()
            assert abs(np.mean(kernel == 0) - 0.5) < 0.05, np.mean(kernel == 0)
        first = stripped.get_layer("up1")
        assert_close(first(x[:2]), np.maximum(np_conv3d_transpose(
            x[:2], first.kernel.numpy(), first.bias.numpy(), (2, 2, 2), "same"), 0))
        assert _gzipped_size(stripped.get_weights()) < 0.8 * dense_size

    def test_pruning_preserving_qat_keeps_the_zeros(self, rng):
        """Prune, strip, then quantize_model(preserve_sparsity=True): after more
        training the kernel the layer computes with keeps the pruned zeros,
        and the int8 file is integer with its weights as sparse; plain QAT
        fills them in."""
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
            if preserve:
                weights = _int8_file_weights(qat)
                assert np.mean(np.concatenate([w.ravel() for w in weights]) == 0) >= 0.45

    def test_cluster_weights_leaves_at_most_n_kernel_values(self, rng):
        x, y = _teacher_data(rng)
        stripped, history = _clustered_to_8_values(x, y, epochs=3)
        assert np.isfinite(history.history["loss"]).all()
        for name in ("up1", "up2"):
            layer = stripped.get_layer(name)
            assert isinstance(layer, tf_conv3dt.Conv3DTranspose)
            assert len(np.unique(layer.kernel.numpy())) <= 8
        second = stripped.get_layer("up2")
        hidden = stripped.get_layer("up1")(x[:2])
        assert_close(stripped(x[:2]), np_conv3d_transpose(
            hidden, second.kernel.numpy(), second.bias.numpy(), (2, 2, 2), "valid", groups=2))

    def test_cluster_preserving_qat_keeps_the_clusters_into_the_int8_file(self, rng):
        """Cluster to 8 values, strip, then quantize_model(preserve_clusters=True):
        after more training the kernel each layer computes with still has at
        most 8 distinct values, and so does each filter's row of every
        FULLY_CONNECTED weight matrix in the int8 file (a per-filter scale
        maps them one to one); plain QAT spreads them out."""
        x, y = _teacher_data(rng)
        stripped, _ = _clustered_to_8_values(x, y, epochs=2)
        for preserve in (True, False):
            qat = quantization.quantize_model(stripped, preserve_clusters=preserve)
            qat.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
            history = qat.fit(x, y, epochs=2, batch_size=8, verbose=0)
            assert np.isfinite(history.history["loss"]).all()
            qat(x[:1])  # the wrapper hands the layer its quantized kernel
            distinct = [len(np.unique(np.asarray(qat.get_layer(f"quant_{name}").layer.kernel)))
                        for name in ("up1", "up2")]
            if not preserve:
                assert min(distinct) > 16, distinct
                continue
            assert max(distinct) <= 8, distinct
            weights = _int8_file_weights(qat)
            assert max(len(np.unique(row)) for w in weights for row in w) <= 8


def test_importing_tf_conv3dt_does_not_import_tfmot():
    import subprocess
    import sys
    code = ("import sys, tf_conv3dt, tf_conv3dt.quantization; "
            "print(any(m.startswith('tensorflow_model_optimization') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split()[-1] == "False"
