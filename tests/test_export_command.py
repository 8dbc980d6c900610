"""The export command: its flags, its errors in one line, its output, its exit statuses."""

import glob
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import tf_conv3dt
from tf_conv3dt.ops import tuning
from tf_conv3dt.ops.tuning import measure, switch
from tf_conv3dt._keras import keras
from exports import CLI, run_cli
from markers import cli_only


def test_help_states_every_flag_and_exit_status(capsys):
    code, text, _ = run_cli(capsys, "--help")
    assert code == 0
    for flag in ("--out", "--model", "--name", "--version", "--formats",
                 "--calibration-data", "--batch-size", "--implementation", "--quiet",
                 "--verbose"):
        assert flag in text
    for status in ("0 ", "1 ", "2 ", "70 ", "130 "):
        assert f"\n  {status}" in text, status


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    """The files the bad-flag rows refer to, as {}/NAME."""
    root = tmp_path_factory.mktemp("bad_files")
    (root / "MODEL.txt").write_text("not a model")
    (root / "BROKEN.keras").write_bytes(b"not a zip")
    (root / "A_FILE").write_text("x")
    rng = np.random.default_rng(0)
    good = rng.uniform(size=(3, 10, 8, 12, 128)).astype("float32")
    for name, array in [("NAN.npy", np.where(np.arange(3)[:, None, None, None, None] == 1,
                                             np.nan, good)),
                        ("INF.npy", np.where(good > 0.999, np.inf, good)),
                        ("HUGE.npy", good.astype("float64") * 1e300),
                        ("EMPTY.npy", good[:0]), ("SHAPE.npy", good[..., :64]),
                        ("TEXT.npy", np.array(["a", "b"]))]:
        np.save(root / name, array)
    (root / "PICKLE.npy").write_bytes(b"\x93NUMPY garbage")
    # A .keras file whose layer config asks for strides beyond int32 (which
    # aborted the process inside oneDNN): rewritten inside a valid archive.
    inputs = keras.Input((2, 2, 2, 1))
    keras.Model(inputs, tf_conv3dt.Conv3DTranspose(1, 2, 2)(inputs)).save(root / "valid.keras")
    dynamic = keras.Input((None, None, None, 1))
    keras.Model(dynamic, tf_conv3dt.Conv3DTranspose(1, 2, 2)(dynamic)).save(root / "DYNAMIC.keras")
    with zipfile.ZipFile(root / "valid.keras") as valid, \
            zipfile.ZipFile(root / "HOSTILE.keras", "w") as hostile:
        for item in valid.infolist():
            data = valid.read(item)
            if item.filename == "config.json":
                data = data.replace(b'"strides": [2, 2, 2]', b'"strides": [2147483648, 1, 1]')
                assert b"2147483648" in data
            hostile.writestr(item, data)
    return root


CLI_ERRORS = [
    pytest.param(argv, fragment, id=id) for id, argv, fragment in [
        ("model missing", ["--model", "missing.keras"], "--model 'missing.keras': does not exist"),
        ("model not .keras", ["--model", "{}/MODEL.txt"], "unknown format"),
        ("model corrupt", ["--model", "{}/BROKEN.keras"], "could not be loaded"),
        ("model with strides beyond int32", ["--model", "{}/HOSTILE.keras"],
         "at most 2147483647"),
        ("model with a dynamic input shape", ["--model", "{}/DYNAMIC.keras"],
         "input shape (None, None, None, 1) must be static"),
        ("name with ..", ["--name", "../escape"], "--name '../escape': must be"),
        ("name of 300 characters", ["--name", "n" * 300], "1 to 200 letters"),
        ("name empty", ["--name", ""], "--name '': must be"),
        ("formats unknown", ["--formats", "keras,caffe"], "--formats 'keras,caffe': choose"),
        ("formats empty", ["--formats", ","], "--formats ',': choose"),
        ("version 0", ["--version", "0"], "--version 0: must be an integer from 1"),
        ("version beyond int64", ["--version", str(10**30)], "9223372036854775807"),
        ("version negative", ["--version", "-1"], "ASCII digits"),
        ("version in Arabic-Indic digits", ["--version", "\u0661"], "ASCII digits"),
        ("version not a number", ["--version", "two"], "ASCII digits"),
        ("batch size 0", ["--batch-size", "0"], "--batch-size 0: must be a positive integer"),
        ("batch size beyond int32 values", ["--batch-size", "10000000"], "at most 17476"),
        ("batch size 2.5", ["--batch-size", "2.5"], "ASCII digits"),
        ("implementation unknown", ["--implementation", "cuda"], "invalid choice: 'cuda'"),
        ("calibration missing", ["--calibration-data", "missing.npy"], "could not be read"),
        ("calibration not .npy", ["--calibration-data", "{}/PICKLE.npy"], "could not be read"),
        ("calibration with NaN", ["--calibration-data", "{}/NAN.npy"], "non-finite"),
        ("calibration with Inf", ["--calibration-data", "{}/INF.npy"], "non-finite"),
        ("calibration beyond float32", ["--calibration-data", "{}/HUGE.npy"], "non-finite"),
        ("calibration empty", ["--calibration-data", "{}/EMPTY.npy"], "holds no sample"),
        ("calibration of another shape", ["--calibration-data", "{}/SHAPE.npy"],
         "must have shape (n, 10, 8, 12, 128)"),
        ("calibration of strings", ["--calibration-data", "{}/TEXT.npy"], "must be numeric"),
        ("out empty", ["--out", ""], "--out '': must be a directory path"),
        ("out a file", ["--out", "{}/A_FILE"], "is a file"),
        ("out under a file", ["--out", "{}/A_FILE/out"], "Not a directory"),
        ("out on a filesystem refusing it", ["--out", "/proc/tf_conv3dt_out"], "cannot be written"),
        ("tolerance of an unknown mode", ["--tolerance", "int9=0.1"],
         "--tolerance 'int9=0.1': 'int9' is not a TFLite mode; choose among float32"),
        ("tolerance negative", ["--tolerance", "int8=0.1", "--tolerance", "float16=-1"],
         "--tolerance 'int8=0.1 float16=-1': the tolerance of float16 must be a finite"),
        ("tolerance NaN", ["--tolerance", "int8=nan"], "must be a finite number >= 0"),
        ("tolerance without a mode", ["--tolerance", "0.1"], "expected MODE=NUMBER"),
        ("tolerance not a number", ["--tolerance", "int8=loose"], "expected MODE=NUMBER"),
        ("unknown flag", ["--output", "x"], "unrecognized arguments"),
    ]
]


@pytest.mark.parametrize("argv,fragment", CLI_ERRORS)
def test_bad_flag_is_one_line_exit_2_and_writes_nothing(capsys, tmp_path, bad_files, argv,
                                                        fragment):
    out = tmp_path / "out"
    argv = [a.replace("{}", str(bad_files)) for a in argv]
    if "--out" not in argv:
        argv = ["--out", str(out)] + argv
    code, _, err = run_cli(capsys, "--quiet", *argv)
    assert code == 2, err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not out.exists()


# What TensorFlow's and LiteRT's C and C++ code writes: absl's lines
# ("I0000 00:00:1796161091.939969   15975 cudart_stub.cc:31] ..."), the older
# TensorFlow stamp, absl's and LiteRT's bare prefixes, the quantizer's echo.
NATIVE_LOG = re.compile(r"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\]"
                        r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
                        r"|WARNING: All log messages|INFO: |fully_quantize: ")


def _native_lines(text):
    return [line for line in text.splitlines() if NATIVE_LOG.match(line)]


@cli_only
def test_the_command_prints_its_own_lines_and_no_cpp_log_unless_verbose(tmp_path):
    """The README's main job, in a fresh process with TensorFlow's logging
    at its defaults: its progress lines and report on stdout, the one
    warning for the user on stderr, none of the C++ lines TensorFlow and
    LiteRT write while they load, convert and run. The module form with
    --verbose shows those too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    done = subprocess.run([sys.executable, CLI, "--out", str(tmp_path / "default")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "warning: No calibration data given: int8 TFLite is calibrated on synthetic uniform "
        "[0, 1) inputs; pass calibration data for real ranges."], done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["importing TensorFlow and tf_conv3dt", "building the reference model"]
    assert "all artifacts within tolerance" in lines and lines[-1].startswith("finished in")
    assert not _native_lines(done.stdout), done.stdout

    verbose = subprocess.run([sys.executable, "-m", "tf_conv3dt_cli", "export", "--verbose",
                              "--out", str(tmp_path / "verbose"), "--formats", "tflite"],
                             capture_output=True, text=True, env=env, cwd=tmp_path)
    assert verbose.returncode == 0, verbose.stderr
    shown = _native_lines(verbose.stderr)
    assert any("flatbuffer_export.cc" in line for line in shown), verbose.stderr
    assert verbose.stdout.splitlines()[-1].startswith("finished in"), verbose.stdout


@cli_only
def test_relative_out_directory(capsys, tmp_path, monkeypatch):
    """The main job as the README types it: a relative --out."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "--out", "out", "--formats", "keras,savedmodel")
    assert code == 0, out
    assert "all artifacts within tolerance" in out
    assert os.path.isfile(tmp_path / "out" / "serving" / "conv3dt" / "1" / "saved_model.pb")
    assert json.load(open(tmp_path / "out" / "report.json"))["published"]


@cli_only
def test_a_tolerance_miss_publishes_nothing(capsys, tmp_path):
    """An int8 file over the tolerance given (0 here) publishes nothing, exit
    status 1, and report.json says why; a tolerance given replaces only its
    mode's default."""
    code, out, _ = run_cli(capsys, "--out", str(tmp_path / "out"), "--formats", "keras,tflite",
                        "--tolerance", "int8=0", "--tolerance", "float16=0.5")
    assert code == 1, out
    assert "nothing was published" in out
    report = json.load(open(tmp_path / "out" / "report.json"))
    assert not report["published"]
    ok = {row["artifact"]: row["within_tolerance"] for row in report["artifacts"]}
    assert ok == {"keras": True, "tflite float32": True, "tflite float16": True,
                  "tflite dynamic_range": True, "tflite int8": False}
    tolerance = {row["artifact"]: row["error"]["tolerance"] for row in report["artifacts"]}
    assert tolerance == {"keras": 1e-5, "tflite float32": 1e-5, "tflite float16": 0.5,
                         "tflite dynamic_range": 1e-2, "tflite int8": 0.0}
    assert sorted(os.listdir(tmp_path / "out")) == ["report.json", "tflite"]
    assert os.listdir(tmp_path / "out" / "tflite") == []
    # The int8 row says what its output can represent, beside what it had to:
    # the file's own scale and zero point, and the Keras output's extremes.
    (int8,) = [row for row in report["artifacts"] if row["artifact"] == "tflite int8"]
    low, high = int8["output_range"]
    keras_low, keras_high = int8["keras_output_range"]
    assert low <= 0.0 == keras_low and 0.9 * keras_high <= high  # after a relu, calibrated
    assert f"{'tflite int8':<22} output range [{low:.4g}, {high:.4g}]" in out


def test_destination_conflicts_are_refused_before_writing(capsys, tmp_path):
    """A refused --version leaves model.keras and report.json as they were."""
    (tmp_path / "serving" / "conv3dt" / "1").mkdir(parents=True)
    (tmp_path / "model.keras").write_bytes(b"earlier")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tflite").write_text("a file")
    (tmp_path / "third" / "serving").mkdir(parents=True)
    (tmp_path / "third" / "serving" / "conv3dt").write_text("a file")
    for argv, fragment in [
        (["--out", str(tmp_path), "--version", "1"], "--version 1: already exists"),
        (["--out", str(tmp_path / "other")], "File exists"),
        (["--out", str(tmp_path / "third")], "File exists"),
    ]:
        code, _, err = run_cli(capsys, "--quiet", *argv)
        assert code == 2 and fragment in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "model.keras").read_bytes() == b"earlier"
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "other", "serving", "third"]
    assert not glob.glob(str(tmp_path / "**" / ".writing-*"), recursive=True)


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory this user cannot create entries in: read-only, or for root
    (whom permissions do not stop) immutable."""
    path = tmp_path / "locked"
    path.mkdir()
    path.chmod(0o555)
    immutable = os.access(path, os.W_OK) and subprocess.run(
        ["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if os.access(path, os.W_OK) and not immutable:
        pytest.skip("neither permissions nor chattr +i can stop this user writing here")
    yield path
    if immutable:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o755)


def test_unwritable_destination_is_exit_2_naming_out(capsys, unwritable_dir):
    for out in (unwritable_dir, unwritable_dir / "out"):
        code, _, err = run_cli(capsys, "--quiet", "--out", str(out))
        assert code == 2 and err.startswith(f"error: --out {str(out)!r}: "), err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert os.listdir(unwritable_dir) == []


def test_with_tuning_on_the_export_times_nothing_it_does_not_save(tmp_path, monkeypatch):
    """Timing is on by default, and building the reference model and the
    export's checks call its "auto" layer: none of those calls is timed
    (the files hold the lowerings they are given), and the switch is as
    it was afterwards."""
    from tf_conv3dt.export.cli import main

    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "1")
    monkeypatch.setenv(tuning.ENV_CACHE_DIR, str(tmp_path / "cache"))
    timed = []
    monkeypatch.setattr(measure, "lowerings", lambda *args: timed.append(args[0]) or ({}, {}))
    tuning.forget()
    try:
        status = main(["--out", str(tmp_path / "out"), "--formats", "savedmodel", "--quiet"])
        assert status == 0 and timed == [] and not tuning.current_cache().memory, timed
        assert switch._switch[0] is None and tuning.autotune_enabled()
    finally:
        tuning.forget()
