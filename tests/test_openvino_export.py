"""The OpenVINO format: its IR files run in OpenVINO Runtime against the NumPy reference."""

import importlib.util
import os

import numpy as np
import pytest

from tf_conv3dt import export
from tf_conv3dt.export import ExportError, formats
from tf_conv3dt.export.formats.tflite import TOLERANCES
from reference import assert_close, np_conv3d_transpose

pytest.importorskip("openvino", reason="the openvino extra is not installed")

SHAPE = (10, 8, 12, 128)


def _reference_output(model, x):
    layer = model.layers[-1]
    y = np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(), layer.strides,
                            layer.padding)
    return np.maximum(y, 0.0)  # relu


@pytest.fixture(scope="module")
def exported_ir(tmp_path_factory):
    """The reference model exported as OpenVINO IR only, calibrated on
    uniform samples: (model, out_dir, report)."""
    out = str(tmp_path_factory.mktemp("openvino"))
    model = export.reference_model()
    calibration = np.random.default_rng(7).uniform(size=(16, *SHAPE)).astype("float32")
    report = export.export_model(model, out, formats="openvino", calibration=calibration)
    return model, out, report


def _rows(report):
    return {row["artifact"]: row for row in report["artifacts"]}


def test_the_float32_ir_runs_any_batch_in_openvino_runtime(exported_ir, rng):
    """The published model.xml read by a Core of its own: the model's input
    and output names, a dynamic batch, the NumPy reference's values at
    batches 1 and 3 computed in float32, and GEMM's MatMuls (no
    ConvolutionBackpropData)."""
    import openvino

    model, out, report = exported_ir
    assert report["published"] and report["all_within_tolerance"]
    ir = openvino.Core().read_model(os.path.join(out, "model.xml"))
    (inp,), (output,) = ir.inputs, ir.outputs
    assert "voxels" in inp.get_names() and "upsampled" in output.get_names()
    assert inp.get_partial_shape().to_string() == "[?,10,8,12,128]"
    compiled = openvino.Core().compile_model(
        ir, "CPU", {openvino.properties.hint.inference_precision: openvino.Type.f32})
    for batch in (1, 3):
        x = rng.uniform(size=(batch, *SHAPE)).astype("float32")
        assert_close(np.asarray(compiled(x)[0]), _reference_output(model, x))
    row = _rows(report)["openvino float32"]
    assert row["precision"] == "f32" and row["latency_ms"] > 0
    assert "MatMul" in row["ops"] and "ConvolutionBackpropData" not in row["ops"], row
    assert row["size_bytes"] == sum(os.path.getsize(os.path.join(out, name))
                                    for name in ("model.xml", "model.bin"))
    assert row["path"] == os.path.join(out, "model.xml")


def test_the_int8_ir_computes_in_int8_within_the_int8_tolerance(exported_ir):
    """NNCF's IR runs its products in u8/i8 (the compiled runtime graph says
    so), within the TFLite int8 file's tolerance of the output range on the
    calibration samples, against the NumPy reference; the row says which
    int8 instructions the CPU has."""
    import openvino

    model, out, report = exported_ir
    row = _rows(report)["openvino int8"]
    assert {"u8", "i8"} & set(row["precision"].split("/")), row
    assert row["error"]["tolerance"] == TOLERANCES["int8"]["tolerance"]
    assert row["int8_instructions"] in ("amx", "vnni", "none")
    ir = openvino.Core().read_model(os.path.join(out, "model_int8.xml"))
    assert "FakeQuantize" in {op.get_type_name() for op in ir.get_ordered_ops()}
    compiled = openvino.Core().compile_model(
        ir, "CPU", {openvino.properties.hint.inference_precision: openvino.Type.f32})
    x = np.random.default_rng(7).uniform(size=(4, *SHAPE)).astype("float32")
    expected = _reference_output(model, x)
    error = np.abs(np.asarray(compiled(x)[0]) - expected).max()
    assert error <= TOLERANCES["int8"]["tolerance"] * (expected.max() - expected.min())


def test_the_ir_is_not_among_the_default_formats():
    """An export that names no formats writes what it always wrote: OpenVINO is asked for."""
    assert "openvino" in formats.names()
    assert "openvino" not in [format_.name for format_ in formats.chosen(None)]


def test_without_the_extra_the_format_is_refused_before_anything_is_written(
        tmp_path, monkeypatch):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "nncf" else found(name, *args))
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"formats.*nncf.*tf_conv3dt\[openvino\]") as raised:
        export.export_model(export.reference_model(), str(out), formats=["openvino"])
    assert raised.value.argument == "formats"
    assert not out.exists()
