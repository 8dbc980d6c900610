"""ONNX files of the layer, the export's and Keras 3's own, run in ONNX Runtime against NumPy."""

import os

import numpy as np
import onnxruntime
import pytest

import tf_conv3dt
from tf_conv3dt import export
from tf_conv3dt.export import formats, onnx
from tf_conv3dt.export.signature import ForcedLowering
from tf_conv3dt._keras import LEGACY_KERAS, keras
from reference import assert_close, np_conv3d_transpose

# (id, input shape without batch, layer arguments): the cases the built-in
# layer gets wrong or refuses on a CPU, in both data formats.
CASES = [
    pytest.param((5, 4, 6, 3), dict(filters=4, kernel_size=3, strides=2, padding="same",
                                    output_padding=1), id="k3s2-same-output-padding"),
    pytest.param((3, 5, 4, 6), dict(filters=2, kernel_size=3, padding="same", dilation_rate=2,
                                    data_format="channels_first"), id="k3-dilation2-cf"),
    pytest.param((4, 3, 5, 2), dict(filters=3, kernel_size=(2, 3, 1), strides=(2, 1, 3),
                                    padding="valid", activation="relu"),
                 id="k231-s213-valid-relu"),
]


def _model(shape, arguments):
    inputs = keras.Input(shape, name="volume")
    layer = tf_conv3dt.Conv3DTranspose(**arguments, name="up")
    model = keras.Model(inputs, layer(inputs))
    # Non-zero biases, so that a dropped bias shows.
    layer.bias.assign(np.random.default_rng(3).normal(size=layer.bias.shape))
    return model


def _reference(model, x):
    layer = model.layers[-1]
    y = np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(), layer.strides,
                            layer.padding, layer.output_padding, layer.dilation_rate,
                            layer.data_format)
    return np.maximum(y, 0) if layer.activation.__name__ == "relu" else y


@pytest.mark.parametrize("implementation", ["native", "gemm", "subpixel"])
@pytest.mark.parametrize("shape, arguments", CASES)
def test_every_lowering_converts_and_runs_any_batch(shape, arguments, implementation, rng):
    """The export's converter, each lowering: a symbolic batch that takes 1
    and 3 samples, the NumPy reference's values, and the node form that
    lowering is meant to give (one ConvTranspose for native, MatMuls for gemm)."""
    model = _model(shape, arguments)
    model_bytes = onnx.convert(model, ForcedLowering(implementation))
    session = onnx.session(model_bytes)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("volume", "up")
    assert inp.shape == [onnx.BATCH_AXIS, *shape] and out.shape[0] == onnx.BATCH_AXIS
    for batch in (1, 3):
        x = rng.uniform(-1, 1, size=(batch, *shape)).astype("float32")
        assert_close(onnx.run(model_bytes, x), _reference(model, x))
    nodes = onnx.node_types(model_bytes)
    if implementation == "gemm":
        assert "MatMul" in nodes and "ConvTranspose" not in nodes, nodes
    elif implementation == "native" and "dilation_rate" not in arguments:
        assert nodes.count("ConvTranspose") == 1, nodes  # dilation: split before the op


@pytest.mark.skipif(LEGACY_KERAS, reason="tf_keras has no model.export(format='onnx'); "
                    "its models reach ONNX through tf_conv3dt.export, tested above")
@pytest.mark.parametrize("shape, arguments", CASES)
def test_keras3_model_export_to_onnx_runs_in_onnx_runtime(shape, arguments, tmp_path, rng):
    """Keras 3's own ``model.export(path, format="onnx")`` of a model with the
    layer loads in ONNX Runtime and gives the NumPy reference's values."""
    model = _model(shape, arguments)
    x = rng.uniform(-1, 1, size=(2, *shape)).astype("float32")
    model(x)  # Keras exports only a model that has been called, as a trained one has
    path = str(tmp_path / "model.onnx")
    model.export(path, format="onnx", verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    for batch in (2, 1):
        (y,) = session.run(None, {inp.name: x[:batch]})
        assert_close(y, _reference(model, x[:batch]))


def test_onnx_without_its_packages_is_refused_naming_formats(tmp_path, monkeypatch):
    """Where the onnx extra is missing, asking for onnx is an error that names
    the formats and the missing package, before anything is written."""
    monkeypatch.setattr(formats.get("onnx"), "missing_packages", lambda: ["tf2onnx"])
    with pytest.raises(export.ExportError) as raised:
        export.export_model(export.reference_model(), str(tmp_path / "out"),
                            formats="keras,onnx")
    assert raised.value.argument == "formats" and "tf2onnx" in str(raised.value)
    assert "pip install 'tf_conv3dt[onnx]'" in str(raised.value)
    assert not os.path.exists(tmp_path / "out")
