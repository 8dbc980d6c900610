"""Quantization-aware training with tensorflow-model-optimization (tf_keras only)."""

import numpy as np
import pytest

import tf_conv3dt
from tf_conv3dt import quantization
from tf_conv3dt._keras import LEGACY_KERAS, keras
from reference import assert_close, np_conv3d_transpose


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
        teacher = _model()
        x = rng.uniform(size=(32, 4, 3, 5, 6)).astype("float32")
        y = np.asarray(teacher(x))
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
        for name, inputs, outputs in tflite.op_list(flatbuffer):
            assert {d for d in inputs if d != "int32"} == {"int8"}, (name, inputs)
            assert set(outputs) == {"int8"}, (name, outputs)
        assert "CONV_3D_TRANSPOSE" not in {name for name, _, _ in tflite.op_list(flatbuffer)}


def test_keras3_is_refused_with_a_clear_error():
    if LEGACY_KERAS:
        assert quantization.quantize_config() is not None
        return
    with pytest.raises(RuntimeError, match="TF_USE_LEGACY_KERAS=1"):
        quantization.quantize_model(_model())
