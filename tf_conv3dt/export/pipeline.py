"""The export job: one Keras model to every deployment artifact, each verified.

Under ``out_dir`` it writes ``model.keras``, a TF Serving version under
``serving/<name>/<version>/``, ``tflite/model_<mode>.tflite`` for each TFLite
mode and ``report.json``; every file appears under its final name only once
complete. The report holds, for each artifact, its size, its largest error
against the Keras model on the same inputs, its latency, and for TFLite its
op list with tensor dtypes.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from tf_conv3dt.export import serving, tflite
from tf_conv3dt.export.serving import ExportError
from tf_conv3dt.layer import Conv3DTranspose
from tf_conv3dt._keras import keras

FORMATS = ("keras", "savedmodel", "tflite")
REFERENCE_INPUT_SHAPE = (10, 8, 12, 128)
SYNTHETIC_CALIBRATION_SAMPLES = 128
# Stated tolerances: relative to the Keras output's largest magnitude, or
# (int8) to its range.
TOLERANCES = {"saved_model": 1e-5, "tfsm_layer": 1e-5, "tflite float32": 1e-5,
              "tflite float16": 1e-2, "tflite dynamic_range": 1e-2, "tflite int8": 2e-2}


def reference_model():
    """The Keras reference's example: (10, 8, 12, 128) -> Conv3DTranspose(32, 2, 2, relu)."""
    inputs = keras.Input(REFERENCE_INPUT_SHAPE, name="voxels")
    outputs = Conv3DTranspose(32, 2, 2, activation="relu", name="upsampled")(inputs)
    return keras.Model(inputs, outputs, name="conv3dt_reference")


def load_model(path):
    """Loads a .keras model in safe mode, with errors meant for the user."""
    if not os.path.isfile(path):
        raise ExportError(f"--model {path!r} does not exist or is not a file.")
    if not path.endswith(".keras"):
        raise ExportError(f"--model {path!r}: unknown format; expected a .keras file.")
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # corrupt zip, bad config, unsafe lambda, ...
        raise ExportError(f"--model {path!r} could not be loaded: "
                          f"{type(error).__name__}: {str(error).splitlines()[0]}") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError(f"--model {path!r} must have one input and one output.")
    return model


def check_formats(formats):
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"Unknown format(s) {unknown or formats!r}; choose from "
                          f"{', '.join(FORMATS)}.")
    return tuple(formats)


def export_model(model, out_dir, name="conv3dt", version=None, formats=FORMATS,
                 calibration=None, batch_size=1, implementation="gemm", log=None):
    """Writes and verifies every artifact of ``model`` under ``out_dir``.

    Args:
      model: a Keras model with one input and one output.
      out_dir: the output directory (created; a file there is an error).
      name, version: the TF Serving model name and version (None: next free).
      formats: a subset of ``FORMATS``.
      calibration: int8 calibration samples ``(n, *input_shape)``; None uses
        synthetic uniform [0, 1) data, with a warning.
      batch_size: the TFLite files' static batch size.
      implementation: the lowering traced into the SavedModel and TFLite
        files ("gemm" by default: integer-quantizable, and fast on CPUs where
        the native op has no oneDNN kernel).
      log: callable taking one line of progress, or None.

    Returns:
      The report (also written to ``out_dir/report.json``).
    """
    log = log or (lambda line: None)
    formats = check_formats(formats)
    serving.check_model_name(name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExportError(f"--batch-size must be a positive integer. Received: {batch_size!r}")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"--out {out_dir!r} is a file; it must be a directory.")
    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()

    def step(text):
        log(f"[{time.perf_counter() - started:6.1f}s] {text}")

    input_shape = tuple(model.inputs[0].shape[1:])
    if None in input_shape:
        raise ExportError(f"The model's input shape {input_shape} must be static "
                          "for TFLite and verification.")
    samples = _calibration_samples(calibration, input_shape, step)
    # Verify on inputs the int8 calibration has not seen, when they are ours to draw.
    x = (samples[:4] if calibration is not None else
         np.random.default_rng(1).uniform(size=(4, *input_shape)).astype(np.float32))
    expected = np.asarray(model(x, training=False))
    report = {"model": model.name, "input_shape": list(input_shape), "artifacts": []}

    if "keras" in formats:
        step("writing model.keras")
        path = os.path.join(out_dir, "model.keras")
        _atomic_write(path, model.save, suffix=".keras")
        report["artifacts"].append(_row("keras", path))

    if "savedmodel" in formats:
        step(f"writing TF Serving SavedModel serving/{name}/ (lowering: {implementation})")
        path = serving.write_serving_version(
            model, os.path.join(out_dir, "serving"), name, version,
            warmup_batches=[x[:1], x], implementation=implementation)
        found = serving.serving_ops(path)
        step(f"  {path}: {len(found['ops'])} op types, all in the model server")
        examples = serving.request_examples(path, name)
        report["serving"] = {"path": path, "version": int(os.path.basename(path)),
                             "ops": found["ops"], "ops_missing_in_server": found["missing_in_server"],
                             "warmup_records": len(serving.read_warmup_requests(path)),
                             "rest_request": examples["rest"], "grpc_request": examples["grpc"]}
        step("  running it in a fresh process without tf_conv3dt (tf.saved_model.load, TFSMLayer)")
        outputs = run_in_fresh_process(path, x)
        for label in ("saved_model", "tfsm_layer"):
            report["artifacts"].append(_row(
                label, path, error=_error(outputs[label], expected, label),
                latency_ms=float(outputs["latency_ms"]) if label == "saved_model" else None,
                latency_runtime="TF, batch 1" if label == "saved_model" else None))

    if "tflite" in formats:
        tflite_dir = os.path.join(out_dir, "tflite")
        os.makedirs(tflite_dir, exist_ok=True)
        shape = (batch_size, *input_shape)
        step("converting the native-op baseline (CONV_3D_TRANSPOSE, as keras.layers."
             "Conv3DTranspose converts)")
        baseline = tflite.convert(model, "float32", shape, implementation="native")
        baseline_ms = tflite.latency_ms(baseline)
        report["tflite_baseline"] = {"latency_ms": baseline_ms,
                                     "ops": _op_summary(tflite.op_list(baseline))}
        for mode in tflite.MODES:
            step(f"converting TFLite {mode}")
            flatbuffer = tflite.convert(model, mode, shape, samples, implementation)
            path = os.path.join(tflite_dir, f"model_{mode}.tflite")
            _atomic_write(path, lambda p, fb=flatbuffer: _write_bytes(p, fb))
            latency = tflite.latency_ms(flatbuffer)
            label = f"tflite {mode}"
            report["artifacts"].append(_row(
                label, path, error=_error(tflite.run(flatbuffer, x), expected, label),
                latency_ms=latency, latency_runtime=f"LiteRT+XNNPACK, batch {batch_size}",
                speedup_vs_native_tflite=baseline_ms / latency,
                ops=_op_summary(tflite.op_list(flatbuffer))))

    report["all_within_tolerance"] = all(
        row.get("within_tolerance", True) for row in report["artifacts"])
    step("writing report.json")
    _atomic_write(os.path.join(out_dir, "report.json"),
                  lambda p: _write_bytes(p, json.dumps(report, indent=1).encode()))
    step("done")
    return report


def run_in_fresh_process(saved_model_dir, x):
    """Outputs of the SavedModel and TFSMLayer in a process without tf_conv3dt."""
    script = os.path.join(os.path.dirname(__file__), "fresh_process_check.py")
    with tempfile.TemporaryDirectory() as scratch:
        inputs, outputs = os.path.join(scratch, "x.npy"), os.path.join(scratch, "y.npz")
        np.save(inputs, x)
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        done = subprocess.run(
            [sys.executable, script, os.path.abspath(saved_model_dir), inputs, outputs],
            env=env, capture_output=True, text=True, cwd=scratch)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ExportError(f"The SavedModel failed in a fresh process: {last}")
        with np.load(outputs) as loaded:
            return {k: loaded[k] for k in loaded.files}


def format_report(report):
    """The report as a fixed-width table (plus the serving request examples)."""
    lines = [f"{'artifact':<22} {'size KiB':>9} {'max abs err':>12} {'rel err':>9} "
             f"{'tol':>6} {'ok':>3} {'latency ms':>11}  runtime"]
    for row in report["artifacts"]:
        error = row.get("error") or {}
        lines.append(
            f"{row['artifact']:<22} {row['size_bytes'] / 1024:9.1f} "
            f"{_fmt(error.get('max_abs'), '.2e'):>12} {_fmt(error.get('relative'), '.2e'):>9} "
            f"{_fmt(error.get('tolerance'), 'g'):>6} "
            f"{'' if 'within_tolerance' not in row else ('yes' if row['within_tolerance'] else 'NO'):>3} "
            f"{_fmt(row.get('latency_ms'), '.3f'):>11}  {row.get('latency_runtime') or ''}")
    if "tflite_baseline" in report:
        base = report["tflite_baseline"]
        lines.append(f"native CONV_3D_TRANSPOSE TFLite baseline: {base['latency_ms']:.3f} ms "
                     f"({', '.join(base['ops'])})")
        for row in report["artifacts"]:
            if "ops" in row:
                lines.append(f"{row['artifact']:<22} {row['speedup_vs_native_tflite']:5.1f}x "
                             f"faster than the baseline; ops: {', '.join(row['ops'])}")
    if "serving" in report:
        s = report["serving"]
        lines += [f"TF Serving: {s['path']} ({s['warmup_records']} warmup records; "
                  f"ops the server lacks: {', '.join(s['ops_missing_in_server']) or 'none'})",
                  "REST:", s["rest_request"], "gRPC:", s["grpc_request"]]
    lines.append("all artifacts within tolerance" if report["all_within_tolerance"]
                 else "SOME ARTIFACTS EXCEED THEIR TOLERANCE")
    return "\n".join(lines)


def _calibration_samples(calibration, input_shape, step):
    if calibration is None:
        warnings.warn("No calibration data given: int8 TFLite is calibrated on synthetic "
                      "uniform [0, 1) inputs; pass --calibration-data for real ranges.",
                      stacklevel=3)
        step("calibration: synthetic uniform [0, 1) samples (no --calibration-data)")
        # Min/max calibration: enough samples that unseen inputs rarely exceed the range.
        return np.random.default_rng(0).uniform(
            size=(SYNTHETIC_CALIBRATION_SAMPLES, *input_shape)).astype(np.float32)
    samples = np.asarray(calibration, np.float32)
    if samples.shape[1:] != input_shape or len(samples) < 1:
        raise ExportError(f"Calibration data must have shape (n, {', '.join(map(str, input_shape))})."
                          f" Received: {samples.shape}")
    step(f"calibration: {len(samples)} samples")
    return samples


def _error(actual, expected, label):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    max_abs = float(np.abs(actual - expected).max())
    # int8 is judged against the output range, the others against its magnitude.
    scale = (expected.max() - expected.min()) if label.endswith("int8") else np.abs(expected).max()
    relative = max_abs / max(float(scale), 1e-30)
    return {"max_abs": max_abs, "relative": relative, "tolerance": TOLERANCES[label],
            "scale": "output range" if label.endswith("int8") else "max |output|"}


def _row(label, path, error=None, **extra):
    size = (os.path.getsize(path) if os.path.isfile(path)
            else sum(os.path.getsize(os.path.join(d, f))
                     for d, _, files in os.walk(path) for f in files))
    row = {"artifact": label, "path": path, "size_bytes": size, **extra}
    if error is not None:
        row["error"] = error
        row["within_tolerance"] = error["relative"] <= error["tolerance"]
    return row


def _op_summary(op_list):
    """'OP(dtype in -> dtype out)' for each distinct op, in first-use order."""
    seen = []
    for name, inputs, outputs in op_list:
        # Shape/index operands are int32 in every mode; show the data dtypes.
        data_in = sorted({d for d in inputs if d != "int32"}) or ["int32"]
        text = f"{name}({'/'.join(data_in)}->{'/'.join(sorted(set(outputs)))})"
        if text not in seen:
            seen.append(text)
    return seen


def _atomic_write(path, write, suffix=""):
    """``write(tmp)`` beside ``path``, then an atomic rename onto it."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".writing-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _fmt(value, spec):
    return "" if value is None else format(value, spec)
