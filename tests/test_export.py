"""Export artifacts, run the way their consumers run them, against independent references."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt import export
from tf_conv3dt.export import serving, tflite
from tf_conv3dt._keras import keras
from reference import assert_close, np_conv3d_transpose

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "export", "export_model.py")


def _reference_output(model, x):
    layer = model.layers[-1]
    y = np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(), layer.strides,
                            layer.padding)
    return np.maximum(y, 0.0)  # relu


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("export"))
    model = export.reference_model()
    with pytest.warns(UserWarning, match="synthetic"):
        report = export.export_model(model, out)
    return model, out, report


def test_every_artifact_written_and_within_tolerance(exported):
    model, out, report = exported
    assert report["all_within_tolerance"], export.format_report(report)
    assert json.load(open(os.path.join(out, "report.json"))) == json.loads(json.dumps(report))
    labels = [row["artifact"] for row in report["artifacts"]]
    assert labels == ["keras", "saved_model", "tfsm_layer", "tflite float32",
                      "tflite float16", "tflite dynamic_range", "tflite int8"]
    for row in report["artifacts"]:
        assert os.path.exists(row["path"]) and row["size_bytes"] > 0
    for mode in tflite.MODES:
        assert os.path.isfile(os.path.join(out, "tflite", f"model_{mode}.tflite"))
    assert not glob.glob(os.path.join(out, "**", ".writing-*"), recursive=True)


def test_keras_file_reloads_without_custom_objects(exported, rng):
    model, out, _ = exported
    restored = keras.models.load_model(os.path.join(out, "model.keras"))
    x = rng.uniform(size=(2, 10, 8, 12, 128)).astype("float32")
    assert_close(restored(x), _reference_output(model, x))


def test_saved_model_signature_contract(exported, rng):
    """Named input and output, dynamic batch and spatial dims, values right."""
    model, out, report = exported
    path = os.path.join(out, "serving", "conv3dt", "1")
    assert report["serving"]["path"] == path
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    signature = tf.saved_model.load(path).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.name == "voxels" and spec.shape.as_list() == [None, None, None, None, 128]
    assert list(signature.structured_outputs) == ["upsampled"]
    x = rng.uniform(size=(3, 5, 3, 7, 128)).astype("float32")  # another batch and size
    y = signature(voxels=tf.constant(x))["upsampled"]
    assert_close(y, _reference_output(model, x))
    assert report["serving"]["ops_missing_in_server"] == []
    assert "MatMul" in report["serving"]["ops"]


def test_warmup_records_replay_through_the_signature(exported):
    model, out, _ = exported
    path = os.path.join(out, "serving", "conv3dt", "1")
    requests = serving.read_warmup_requests(path)
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 2
    signature = tf.saved_model.load(path).signatures["serving_default"]
    for request in requests:
        x = tf.make_ndarray(request.inputs["voxels"])
        assert_close(signature(voxels=tf.constant(x))["upsampled"], _reference_output(model, x))


def test_saved_model_cli_runs_it_in_a_fresh_process(exported, tmp_path):
    model, out, _ = exported
    path = os.path.join(out, "serving", "conv3dt", "1")
    x = np.random.default_rng(5).uniform(size=(2, 10, 8, 12, 128)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    subprocess.run([cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def",
                    "serving_default", "--inputs", f"voxels={tmp_path / 'x.npy'}",
                    "--outdir", str(tmp_path)], check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert_close(np.load(tmp_path / "upsampled.npy"), _reference_output(model, x))


def test_tfsm_layer_in_a_process_without_tf_conv3dt(exported, rng):
    model, out, _ = exported
    x = rng.uniform(size=(2, 10, 8, 12, 128)).astype("float32")
    outputs = export.run_in_fresh_process(os.path.join(out, "serving", "conv3dt", "1"), x)
    assert_close(outputs["tfsm_layer"], _reference_output(model, x))
    assert_close(outputs["saved_model"], _reference_output(model, x))


def test_int8_tflite_is_integer_end_to_end(exported, rng):
    """Every compute op takes int8 tensors and no CONV_3D_TRANSPOSE remains;
    the values stay within 2% of the output range of the NumPy reference."""
    model, out, _ = exported
    flatbuffer = open(os.path.join(out, "tflite", "model_int8.tflite"), "rb").read()
    op_list = tflite.op_list(flatbuffer)
    names = {name for name, _, _ in op_list}
    assert "CONV_3D_TRANSPOSE" not in names and "FULLY_CONNECTED" in names
    for name, inputs, outputs in op_list:
        data = [d for d in inputs if d != "int32"]
        assert set(data) == {"int8"} and set(outputs) == {"int8"}, (name, inputs, outputs)
    x = rng.uniform(size=(2, 10, 8, 12, 128)).astype("float32")
    expected = _reference_output(model, x)
    error = np.abs(tflite.run(flatbuffer, x) - expected).max()
    assert error <= 0.02 * (expected.max() - expected.min())


def test_float_tflite_matches_reference(exported, rng):
    model, out, _ = exported
    x = rng.uniform(size=(2, 10, 8, 12, 128)).astype("float32")
    for mode, rel in [("float32", 1e-5), ("float16", 1e-2), ("dynamic_range", 1e-2)]:
        flatbuffer = open(os.path.join(out, "tflite", f"model_{mode}.tflite"), "rb").read()
        assert_close(tflite.run(flatbuffer, x), _reference_output(model, x), rel=rel)


def _tree_digest(path):
    digest = hashlib.sha256()
    for directory, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            digest.update(name.encode())
            digest.update(open(os.path.join(directory, name), "rb").read())
    return digest.hexdigest()


def test_versions_are_never_overwritten(exported):
    model, out, _ = exported
    base = os.path.join(out, "serving")
    before = _tree_digest(os.path.join(base, "conv3dt", "1"))
    with pytest.raises(export.ExportError, match="Version 1 already exists"):
        export.write_serving_version(model, base, "conv3dt", version=1)
    second = export.write_serving_version(model, base, "conv3dt")
    assert second == os.path.join(base, "conv3dt", "2")
    assert _tree_digest(os.path.join(base, "conv3dt", "1")) == before


def test_custom_model_with_dilation_and_channels_first(tmp_path, rng):
    """--model: a .keras file whose layer the built-ins cannot run on CPU."""
    inputs = keras.Input((2, 5, 4, 6), name="volume")
    outputs = tf_conv3dt.Conv3DTranspose(3, 3, padding="same", dilation_rate=2,
                                         data_format="channels_first", name="up")(inputs)
    path = str(tmp_path / "custom.keras")
    keras.Model(inputs, outputs).save(path)
    model = export.load_model(path)
    calibration = rng.uniform(size=(8, 2, 5, 4, 6)).astype("float32")
    report = export.export_model(model, str(tmp_path / "out"), name="custom",
                                 formats=("savedmodel", "tflite"), calibration=calibration)
    errors = {row["artifact"]: row for row in report["artifacts"]}
    # int8 included: an overlapping dilated kernel, accumulated in int32 per phase.
    for label in ("saved_model", "tfsm_layer", "tflite float32", "tflite float16",
                  "tflite dynamic_range", "tflite int8"):
        assert errors[label]["within_tolerance"], errors[label]
    signature = tf.saved_model.load(report["serving"]["path"]).signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert spec.shape.as_list() == [None, 2, None, None, None]  # channels stay fixed
    x = rng.uniform(size=(1, 2, 7, 3, 5)).astype("float32")
    layer = model.layers[-1]
    expected = np_conv3d_transpose(x, layer.kernel.numpy(), layer.bias.numpy(), (1, 1, 1),
                                   "same", None, (2, 2, 2), "channels_first")
    assert_close(signature(volume=tf.constant(x))["up"], expected)


class TestCommandLine:
    def _run(self, capsys, *argv):
        from importlib.machinery import SourceFileLoader

        cli = SourceFileLoader("export_model", CLI).load_module()
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def test_help_documents_every_flag(self, capsys):
        with pytest.raises(SystemExit) as exit_info:
            self._run(capsys, "--help")
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for flag in ("--out", "--model", "--name", "--version", "--formats",
                     "--calibration-data", "--batch-size", "--implementation", "--quiet"):
            assert flag in text

    @pytest.mark.parametrize("argv,fragment", [
        (["--model", "missing.keras"], "does not exist"),
        (["--model", "MODEL.txt"], "unknown format"),
        (["--model", "BROKEN.keras"], "could not be loaded"),
        (["--name", "../escape"], "Model name '../escape'"),
        (["--formats", "keras,onnx"], "Unknown format"),
        (["--calibration-data", "missing.npy"], "could not be read"),
    ])
    def test_errors_are_one_line_without_traceback(self, capsys, tmp_path, argv, fragment):
        (tmp_path / "MODEL.txt").write_text("not a model")
        (tmp_path / "BROKEN.keras").write_bytes(b"not a zip")
        argv = [a.replace("MODEL.txt", str(tmp_path / "MODEL.txt"))
                 .replace("BROKEN.keras", str(tmp_path / "BROKEN.keras")) for a in argv]
        out = tmp_path / "out"
        code, _, err = self._run(capsys, "--out", str(out), "--quiet", *argv)
        assert code == 2
        assert err.startswith("error: ") and fragment in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
        assert not glob.glob(os.path.join(out, "serving", "*", "[0-9]*"))

    def test_relative_out_directory(self, capsys, tmp_path, monkeypatch):
        """The main job as the README types it: a relative --out."""
        monkeypatch.chdir(tmp_path)
        code, out, _ = self._run(capsys, "--out", "out", "--formats", "keras,savedmodel")
        assert code == 0, out
        assert "all artifacts within tolerance" in out
        assert os.path.isfile(tmp_path / "out" / "serving" / "conv3dt" / "1" / "saved_model.pb")
        assert json.load(open(tmp_path / "out" / "report.json"))["all_within_tolerance"]

    def test_out_is_a_file(self, capsys, tmp_path):
        target = tmp_path / "file"
        target.write_text("x")
        code, _, err = self._run(capsys, "--out", str(target))
        assert code == 2 and "is a file" in err


def test_sigkill_mid_export_leaves_no_version(exported, tmp_path):
    """Kill the CLI while the SavedModel is being written: TF Serving finds no
    new numeric version, and the earlier one is intact."""
    model, out, _ = exported
    base = tmp_path / "serving" / "conv3dt"
    base.mkdir(parents=True)
    os.rename(os.path.join(out, "serving", "conv3dt", "1"), base / "1")
    before = _tree_digest(base / "1")
    for _ in range(3):  # retry if the write outran the poll
        process = subprocess.Popen([sys.executable, CLI, "--out", str(tmp_path), "--quiet",
                                    "--formats", "savedmodel"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if glob.glob(str(base / ".writing-*" / "*")):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        process.wait()
        if process.returncode == -signal.SIGKILL:
            break
        for finished in sorted(os.listdir(base)):  # outran us: undo and retry
            if finished.isdigit() and finished != "1":
                import shutil
                shutil.rmtree(base / finished)
    assert process.returncode == -signal.SIGKILL
    assert sorted(e for e in os.listdir(base) if e.isdigit()) == ["1"]
    assert _tree_digest(base / "1") == before
    os.rename(base / "1", os.path.join(out, "serving", "conv3dt", "1"))
