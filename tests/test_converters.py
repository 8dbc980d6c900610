"""The SavedModel the export publishes converts with the converters its users
run on it: tf2onnx, TensorFlow Lite's ``from_saved_model`` and OpenVINO's
TensorFlow frontend. For every lowering an export can trace into it, each
converted model computes the Keras model's output within float32's
tolerance, so that a lowering whose graph one of them cannot read fails here."""

import numpy as np
import pytest
import tensorflow as tf

import tf_conv3dt
from reference import assert_close
from tf_conv3dt._keras import keras
from tf_conv3dt import export
from tf_conv3dt.export import onnx, tflite
from tf_conv3dt.export.report import EXACT
from tf_conv3dt.export.signature import SIGNATURE
from tf_conv3dt.ops import lowerings

INPUT_SHAPE = (5, 6, 4, 3)
TOLERANCE = EXACT["tolerance"]


@pytest.fixture(scope="module")
def model():
    """Two layers, one of each form sub-pixel builds: an overlapping kernel
    (k3 s2, a convolution per stride phase) and one that equals its stride
    (k2 s2, every phase in one convolution); non-zero biases."""
    inputs = keras.Input(INPUT_SHAPE, name="volume")
    hidden = tf_conv3dt.Conv3DTranspose(4, 3, 2, padding="same", activation="relu",
                                        name="up")(inputs)
    outputs = tf_conv3dt.Conv3DTranspose(2, 2, 2, name="out")(hidden)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(5)
    for layer in model.layers[1:]:
        layer.bias.assign(rng.normal(size=layer.bias.shape))
    return model


# The export's default (None: sub-pixel, depthwise layers as GEMM's one call)
# and every registered lowering.
@pytest.fixture(scope="module", params=[None, *lowerings.names()],
                ids=lambda name: name or "default")
def published(request, model, tmp_path_factory):
    """The published SavedModel's path, and the Keras model's output for ``x``."""
    base = tmp_path_factory.mktemp("serving")
    path = export.write_serving_version(model, str(base), "m",
                                        implementation=request.param)
    x = np.random.default_rng(6).uniform(-1, 1, (2, *INPUT_SHAPE)).astype("float32")
    return path, x, model(x).numpy()


def test_tf2onnx_converts_it(published):
    """As ``python -m tf2onnx.convert --saved-model PATH --opset 17`` does."""
    import tf2onnx

    path, x, expected = published
    graph_def, inputs, outputs = tf2onnx.tf_loader.from_saved_model(
        path, None, None, signatures=[SIGNATURE])
    proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=inputs,
                                              output_names=outputs, opset=onnx.OPSET)
    assert_close(onnx.run(proto.SerializeToString(), x), expected, TOLERANCE)


def test_the_tflite_converter_converts_it(published):
    """Its signature keeps the spatial sizes dynamic: the file is resized to
    the input, as LiteRT's users resize it."""
    path, x, expected = published
    converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[SIGNATURE])
    runner = tflite.interpreter(converter.convert())
    (inp,), (out,) = runner.get_input_details(), runner.get_output_details()
    runner.resize_tensor_input(inp["index"], x.shape)
    runner.allocate_tensors()
    runner.set_tensor(inp["index"], x)
    runner.invoke()
    assert_close(runner.get_tensor(out["index"]), expected, TOLERANCE)


def test_openvino_converts_it(published):
    """``openvino.convert_model`` on the directory, run on the CPU in float32
    (its CPU plugin runs bfloat16 by default where the CPU has it)."""
    import openvino

    path, x, expected = published
    converted = openvino.convert_model(path)
    compiled = openvino.Core().compile_model(
        converted, "CPU", {openvino.properties.hint.inference_precision: openvino.Type.f32})
    assert_close(compiled(x)[0], expected, TOLERANCE)
