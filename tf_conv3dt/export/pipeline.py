"""The export job: one Keras model to every deployment artifact, each verified.

Under ``out_dir`` it writes ``model.keras``, a TF Serving version under
``serving/<name>/<version>/``, ``tflite/model_<mode>.tflite`` for each TFLite
mode, ``model.onnx`` and ``report.json``, in three steps: every argument, and the
destination, is checked before anything is written (``_validate``); the
artifacts are written and verified in a staging directory (``_stage``,
``staging.Staging``); they are published by rename only when every one is
within its tolerance (``_publish``). The report holds, for each artifact, its
size, its largest error against the Keras model on the same inputs, its
latency, for TFLite its op list with tensor dtypes, for ONNX its node types.
"""

import errno
import io
import json
import math
import numbers
import os
import subprocess
import sys
import tempfile
import time
import warnings
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tf_conv3dt import model_file, shapes
from tf_conv3dt.export import onnx, serving, staging, tflite
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.signature import lowering
from tf_conv3dt.layer import Conv3DTranspose
from tf_conv3dt.ops import lowerings, tuning
from tf_conv3dt._keras import keras

FORMATS = ("keras", "savedmodel", "tflite", "onnx")


def implementations():
    """What an export can be asked to trace into every artifact, and the CLI
    offers: each registered lowering (``ops.lowerings``), "auto", which lets
    each layer choose by this host's rule, and "tuned", which times each
    "auto" layer of the SavedModel on this host and traces its fastest
    forward; the other artifacts then take their defaults, since
    TensorFlow's timings say nothing of LiteRT's or ONNX Runtime's kernels."""
    return (*lowerings.names(), "auto", "tuned")

REFERENCE_INPUT_SHAPE = (10, 8, 12, 128)
SYNTHETIC_CALIBRATION_SAMPLES = 128
VERIFICATION_SAMPLES = 4
# The progress line after which the artifacts are moved to their final names.
PUBLISHING_STEP = "publishing"
# Relative to the Keras output's largest magnitude (TFLite modes: tflite.MODES).
EXACT = {"tolerance": 1e-5, "scale": "max |output|"}


# Building (tf_keras) and loading call the layers: nothing to time there.
@tuning.switched(False)
def reference_model():
    """The Keras reference's example: (10, 8, 12, 128) -> Conv3DTranspose(32, 2, 2, relu)."""
    inputs = keras.Input(REFERENCE_INPUT_SHAPE, name="voxels")
    outputs = Conv3DTranspose(32, 2, 2, activation="relu", name="upsampled")(inputs)
    return keras.Model(inputs, outputs, name="conv3dt_reference")


@tuning.switched(False)
def load_model(path):
    """Loads a .keras model in safe mode, with errors meant for the user."""
    try:
        model = model_file.load(path)
    except ValueError as error:
        raise ExportError(str(error), "model", path) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ExportError("must have one input and one output", "model", path)
    return model


def check_formats(formats):
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"choose one or more of {', '.join(FORMATS)}", "formats",
                          tuple(formats))
    missing = onnx.missing_packages() if "onnx" in formats else []
    if missing:
        raise ExportError(f"onnx needs {', '.join(missing)}: pip install 'tf_conv3dt[onnx]', "
                          "or leave onnx out", "formats", tuple(formats))
    return tuple(formats)


# Its checks call the model, which need not time "auto" (its files hold the
# lowering they are given; "tuned" times regardless).
@tuning.switched(False)
def export_model(model, out_dir, name="conv3dt", version=None, formats=FORMATS,
                 calibration=None, batch_size=1, implementation=None, dynamic_batch=False,
                 tolerances=None, log=None):
    """Writes, verifies and publishes every artifact of ``model`` under ``out_dir``.

    Args:
      model: a Keras model with one input and one output.
      out_dir: the output directory (created; it must be writable).
      name: the TF Serving model name.
      version: the TF Serving version (None: the next free one, retried if a
        concurrent export takes it first).
      formats: a subset of ``FORMATS`` (or a comma-separated string).
      calibration: int8 calibration samples ``(n, *input_shape)``, finite;
        None uses synthetic uniform [0, 1) data, with a warning.
      batch_size: the TFLite files' static batch size, or with
        ``dynamic_batch`` the batch they are verified and timed at.
      implementation: the lowering traced into the SavedModel, TFLite and
        ONNX files: one of ``pipeline.implementations()``, or None for each artifact's
        own (``signature.DEFAULT_LOWERINGS``). "tuned" times the SavedModel's "auto"
        layers here, at ``batch_size``: run it on a machine of the kind that
        will serve.
      dynamic_batch: TFLite files that take any batch (shape signature -1;
        ``interpreter.resize_tensor_input`` before ``allocate_tensors``).
      tolerances: ``{TFLite mode: tolerance}`` replacing the defaults of
        ``tflite.MODES`` for those modes (same scale). The int8 default, 2%
        of the output range, holds for a few layers; a deep network's
        rounding adds up, and a sigmoid output turns small differences near
        0.5 into large ones: judge such a file by its task metric, then
        state the error you accept, e.g. ``{"int8": 0.25}``.
      log: callable taking one line of progress, or None. It may raise (a
        KeyboardInterrupt, say) to abort: it is called before publishing,
        and nothing is published after an exception.

    Returns:
      The report (also written to ``out_dir/report.json``). When an artifact
      exceeds its tolerance, ``report["published"]`` is False and no
      artifact is written (the report is).

    Raises:
      ExportError: a bad argument (``argument`` and ``value`` name it), an
        unwritable destination, or a model that cannot be exported. Nothing
        is written then. A write that fails while the artifacts are staged
        (a full disk or quota, an I/O error, a filesystem turned read-only:
        ``WRITE_ERRNOS``, from Python's writes or TensorFlow's) is one too,
        naming ``out_dir`` and the OS reason: nothing is published, and the
        staging directory is removed.
    """
    job = _validate(model, out_dir, name, version, formats, calibration, batch_size,
                    implementation, dynamic_batch, tolerances)
    log = log or (lambda line: None)
    started = time.perf_counter()

    def step(text):
        log(f"[{time.perf_counter() - started:6.1f}s] {text}")

    if calibration is None:
        warnings.warn("No calibration data given: int8 TFLite is calibrated on synthetic "
                      "uniform [0, 1) inputs; pass calibration data for real ranges.",
                      stacklevel=2)
        step("calibration: synthetic uniform [0, 1) samples (no calibration data given)")
    else:
        step(f"calibration: {len(job.samples)} samples")
    # Verify on calibration samples, which the int8 ranges cover: the int8
    # error is then the rounding's. An input beyond the calibrated ranges is
    # clipped: with the synthetic data, about one export in 30 drew unseen
    # verification inputs 3-4% of the output range beyond them.
    x = job.samples[:VERIFICATION_SAMPLES]
    expected = np.asarray(model(x, training=False))
    report = _Report(model.name, list(job.input_shape))
    try:
        staged = staging.Staging(out_dir)
    except OSError as error:  # e.g. an immutable directory, which root cannot write either
        raise _unwritable(out_dir, error) from None
    with staged:
        try:
            _stage(job, staged, x, expected, report, step)
        except Exception as error:  # noqa: BLE001 - only a failed write is re-raised as ours
            reason = write_failure(error)
            if reason is None:
                raise
            raise ExportError(f"cannot be written: {reason}; nothing was published",
                              "out_dir", out_dir) from None
        published = report.all_within_tolerance()
        if published:
            step(PUBLISHING_STEP)  # the caller's last chance to abort
            _publish(job, staged, report)
        else:
            step("an artifact exceeds its tolerance: nothing is published")
        step("writing report.json")
        result = report.as_dict(published)
        try:
            with open(staged.path_of("report.json"), "w") as f:
                json.dump(result, f, indent=1)
        except OSError as error:
            raise _unwritable(out_dir, error) from None
        staged.publish("report.json", job.paths["report"])
    step("done")
    return result


class _Job(NamedTuple):
    """An export's checked arguments, and where its artifacts go."""

    model: object
    formats: tuple
    name: str
    version: object
    implementation: str
    input_shape: tuple
    batch_size: int
    dynamic_batch: bool
    verifications: dict
    samples: np.ndarray
    paths: dict


def _validate(model, out_dir, name, version, formats, calibration, batch_size,
              implementation, dynamic_batch, tolerances):
    """Every argument checked and the destination prepared, before anything is
    written: the job, or an ExportError naming the argument at fault."""
    formats = check_formats(formats)
    serving.check_model_name(name)
    serving.check_version(version)
    if implementation is not None and implementation not in implementations():
        raise ExportError(f"choose one of {', '.join(implementations())}", "implementation",
                          implementation)
    input_shape = tuple(model.inputs[0].shape[1:])
    if None in input_shape:
        raise ExportError(f"its input shape {input_shape} must be static for TFLite and "
                          "verification", "model", model.name)
    _check_batch_size(batch_size, input_shape)
    if not isinstance(dynamic_batch, bool):
        raise ExportError("must be True or False", "dynamic_batch", dynamic_batch)
    verifications = check_tolerances(tolerances)
    samples = _calibration_samples(calibration, input_shape)
    paths = _prepare_destination(out_dir, name, version, formats)
    return _Job(model, formats, name, version, implementation, input_shape, batch_size,
                dynamic_batch, verifications, samples, paths)


class _Report:
    """What the export found: a row per artifact (its size, error, latency and
    for TFLite its ops) and the serving and TFLite-baseline sections."""

    def __init__(self, model_name, input_shape):
        self.head = {"model": model_name, "input_shape": input_shape}
        self.artifacts = []
        self.sections = {}  # "serving", "tflite_baseline", in the order they are staged

    def all_within_tolerance(self):
        return all(row.get("within_tolerance", True) for row in self.artifacts)

    def as_dict(self, published):
        """report.json: the rows without their staged names."""
        rows = [{k: v for k, v in row.items() if k != "staged"} for row in self.artifacts]
        return {**self.head, "artifacts": rows, **self.sections,
                "all_within_tolerance": self.all_within_tolerance(), "published": published}


def _stage(job, staged, x, expected, report, step):
    """Writes and verifies every artifact of ``job`` in ``staged``."""
    if "keras" in job.formats:
        _stage_keras(job, staged, x, expected, report, step)
    if "savedmodel" in job.formats:
        _stage_saved_model(job, staged, x, expected, report, step)
    if "tflite" in job.formats:
        _stage_tflite(job, staged, x, expected, report, step)
    if "onnx" in job.formats:
        _stage_onnx(job, staged, x, expected, report, step)


def _publish(job, staged, report):
    """Moves every staged artifact to its final name."""
    if "savedmodel" in job.formats:
        # First: the one rename that can still be refused (a given version
        # that appeared meanwhile), before any file is replaced.
        final = serving.publish_version(staged, "saved_model", job.paths["model_dir"],
                                        job.version)
        report.sections["serving"].update(path=final, version=int(os.path.basename(final)))
        for row in report.artifacts:
            if row["artifact"] in ("saved_model", "tfsm_layer"):
                row["path"] = final
    for row in report.artifacts:
        if row["staged"] is not None:
            staged.publish(row["staged"], row["path"])


def _stage_onnx(job, staged, x, expected, report, step):
    implementation = lowering(job.implementation, "onnx")
    step(f"converting ONNX (lowering: {implementation}, tf2onnx, opset {onnx.OPSET})")
    model_bytes = onnx.convert(job.model, implementation)
    with open(staged.path_of("model.onnx"), "wb") as f:
        f.write(model_bytes)
    step(f"  running it in ONNX Runtime at batch {len(x)} and 1")
    report.artifacts.append(_artifact_row(
        "onnx", staged, "model.onnx", job.paths["onnx"],
        error=_error_metrics(onnx.run(model_bytes, x), expected, **EXACT),
        latency_ms=onnx.latency_ms(model_bytes, batch=1),
        latency_runtime="ONNX Runtime CPU, batch 1 of any",
        nodes=onnx.node_types(model_bytes)))


def check_tolerances(tolerances):
    """``tflite.MODES`` with ``tolerances`` ({mode: tolerance}) applied."""
    if tolerances is None:
        return dict(tflite.MODES)
    if not isinstance(tolerances, dict):
        raise ExportError("must be a dict {TFLite mode: tolerance}", "tolerances", tolerances)
    verifications = dict(tflite.MODES)
    for mode, tolerance in tolerances.items():
        if mode not in tflite.MODES:
            raise ExportError(f"{mode!r} is not a TFLite mode; choose among "
                              f"{', '.join(tflite.MODES)}", "tolerances", tolerances)
        if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
                or not math.isfinite(tolerance) or tolerance < 0):
            raise ExportError(f"the tolerance of {mode} must be a finite number >= 0",
                              "tolerances", tolerances)
        verifications[mode] = dict(tflite.MODES[mode], tolerance=float(tolerance))
    return verifications


def _check_batch_size(batch_size, input_shape):
    if (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
            or batch_size * math.prod(input_shape) > shapes.MAX_LENGTH):
        raise ExportError(
            "must be a positive integer, at most "
            f"{shapes.MAX_LENGTH // math.prod(input_shape)} for this input shape "
            f"(a batch of at most {shapes.MAX_LENGTH} values)", "batch_size", batch_size)


def _prepare_destination(out_dir, name, version, formats):
    """Creates ``out_dir`` (and the model's serving directory) and checks that
    every artifact can be published there; returns the destination paths."""
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ExportError("must be a directory path", "out_dir", out_dir)
    out_dir = os.fspath(out_dir)
    paths = {"keras": os.path.join(out_dir, "model.keras"),
             "onnx": os.path.join(out_dir, "model.onnx"),
             "tflite": os.path.join(out_dir, "tflite"),
             "model_dir": os.path.join(out_dir, "serving", name),
             "report": os.path.join(out_dir, "report.json")}
    try:
        if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
            raise ExportError("is a file; it must be a directory", "out_dir", out_dir)
        for label, path in paths.items():
            if label in ("keras", "onnx", "report") and os.path.isdir(path):
                raise ExportError(f"{path} is a directory; it must be a file or absent",
                                  "out_dir", out_dir)
        if "savedmodel" in formats:
            serving.check_version_free(paths["model_dir"], version)
        os.makedirs(out_dir, exist_ok=True)
        if "tflite" in formats:
            os.makedirs(paths["tflite"], exist_ok=True)
        if "savedmodel" in formats:
            os.makedirs(paths["model_dir"], exist_ok=True)
        for directory in {out_dir, paths["tflite"], paths["model_dir"]}:
            if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
                raise ExportError(f"{directory} is not writable", "out_dir", out_dir)
        staging.remove_stale(paths["tflite"], paths["model_dir"])
    except OSError as error:
        raise _unwritable(out_dir, error) from None
    return paths


# What a filesystem that runs out of space or quota, fails or turns read-only
# under a running export gives its writes.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)


def write_failure(error):
    """The OS reason (``os.strerror``) when ``error`` is a failed write:
    an OSError with one of ``WRITE_ERRNOS``, or an error of TensorFlow's own
    file writes or of the fresh-process check whose message carries that
    reason. None for any other error."""
    if isinstance(error, OSError):
        return os.strerror(error.errno) if error.errno in WRITE_ERRNOS else None
    if not isinstance(error, (tf.errors.OpError, ExportError)):
        return None
    return next((os.strerror(code) for code in WRITE_ERRNOS if os.strerror(code) in str(error)),
                None)


def _unwritable(out_dir, error):
    return ExportError(f"cannot be written: {error.strerror or error}"
                       f"{': ' + error.filename if error.filename else ''}", "out_dir", out_dir)


def _stage_keras(job, staged, x, expected, report, step):
    step("writing model.keras and reloading it (safe mode)")
    job.model.save(staged.path_of("model.keras"))
    reloaded = keras.models.load_model(staged.path_of("model.keras"), safe_mode=True,
                                       compile=False)
    report.artifacts.append(_artifact_row(
        "keras", staged, "model.keras", job.paths["keras"],
        error=_error_metrics(reloaded(x, training=False), expected, **EXACT)))


def _runs(scope, selection):
    """One line of what a traced call runs: where it was timed, its
    decision, else its layer, lowering and why."""
    if selection.decision is not None:
        return selection.decision.describe(serving=True)
    return f"{scope.split('/')[-1] or 'call'}: {selection.runs} ({selection.why})"


def _stage_saved_model(job, staged, x, expected, report, step):
    implementation = lowering(job.implementation, "savedmodel")
    detail = (f", timing each auto layer's forward at batch {job.batch_size}"
              if implementation == "tuned" else "")
    step(f"writing TF Serving SavedModel (lowering: {implementation}{detail})")
    path = staged.path_of("saved_model")
    found = serving.write_version(job.model, path, job.name, warmup_batches=[x[:1], x],
                                  implementation=job.implementation,
                                  tuning_batch=job.batch_size)
    # What each call runs, and why (ops.select), once: a second trace
    # (the signature's, the warmup's) selects the same again.
    for line in dict.fromkeys(_runs(scope, selection)
                              for scope, selection in found["selections"]):
        step(f"  {line}")
    step(f"  {len(found['ops'])} op types, all in the model server")
    examples = serving.request_examples(path, job.name)
    report.sections["serving"] = {
        "path": None, "version": None,
        "ops": found["ops"], "ops_missing_in_server": found["missing_in_server"],
        "warmup_records": len(serving.read_warmup_requests(path)),
        "rest_request": examples["rest"], "grpc_request": examples["grpc"]}
    step("  running it in a fresh process without tf_conv3dt (tf.saved_model.load, TFSMLayer)")
    outputs = run_in_fresh_process(path, x, scratch_dir=staged.path)
    # Published as a version, by its own rename (serving.publish_version).
    report.artifacts.append(_artifact_row(
        "saved_model", staged, "saved_model", None, publish=False,
        error=_error_metrics(outputs["saved_model"], expected, **EXACT),
        latency_ms=float(outputs["latency_ms"]), latency_runtime="TF, batch 1"))
    report.artifacts.append(_artifact_row(
        "tfsm_layer", staged, "saved_model", None, publish=False,
        error=_error_metrics(outputs["tfsm_layer"], expected, **EXACT)))


def _stage_tflite(job, staged, x, expected, report, step):
    batch = job.batch_size
    shape = (None if job.dynamic_batch else batch, *job.input_shape)
    runtime = f"LiteRT+XNNPACK, batch {batch}{' of any' if job.dynamic_batch else ''}"
    step("converting the native-op baseline (CONV_3D_TRANSPOSE, as keras.layers."
         "Conv3DTranspose converts)")
    baseline = tflite.convert(job.model, "float32", shape, implementation="native",
                              scratch_dir=staged.path)
    baseline_ms = tflite.latency_ms(baseline, batch=batch)
    report.sections["tflite_baseline"] = {"latency_ms": baseline_ms,
                                          "ops": _op_summary(tflite.op_list(baseline))}
    files = tflite.convert_each(job.model, list(job.verifications), shape, job.samples,
                                lowering(job.implementation, "tflite"),
                                scratch_dir=staged.path)
    for mode, verification in job.verifications.items():
        step(f"converting TFLite {mode}")
        _, flatbuffer = next(files)
        name = os.path.join("tflite", f"model_{mode}.tflite")
        with open(staged.path_of(name), "wb") as f:
            f.write(flatbuffer)
        latency = tflite.latency_ms(flatbuffer, batch=batch)
        report.artifacts.append(_artifact_row(
            f"tflite {mode}", staged, name,
            os.path.join(job.paths["tflite"], os.path.basename(name)),
            error=_error_metrics(tflite.run(flatbuffer, x, batch=batch), expected,
                                 **verification),
            latency_ms=latency, latency_runtime=runtime,
            speedup_vs_native_tflite=baseline_ms / latency,
            ops=_op_summary(tflite.op_list(flatbuffer))))
        covered = tflite.output_range(flatbuffer)
        if covered is not None:  # what calibration gave the output, beside what it must hold
            report.artifacts[-1].update(
                output_range=covered,
                keras_output_range=[float(expected.min()), float(expected.max())])


def run_in_fresh_process(saved_model_dir, x, scratch_dir=None):
    """Outputs of the SavedModel and TFSMLayer in a process without tf_conv3dt
    (its files in a temporary directory under ``scratch_dir``)."""
    script = os.path.join(os.path.dirname(__file__), "fresh_process_check.py")
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        inputs, outputs = os.path.join(scratch, "x.npy"), os.path.join(scratch, "y.npz")
        # Written by Python, not np.save: numpy reports a short write (a full
        # disk) without its errno.
        encoded = io.BytesIO()
        np.save(encoded, x)
        with open(inputs, "wb") as f:
            f.write(encoded.getbuffer())
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
            f"{_within(row):>3} "
            f"{_fmt(row.get('latency_ms'), '.3f'):>11}  {row.get('latency_runtime') or ''}")
    if "tflite_baseline" in report:
        base = report["tflite_baseline"]
        lines.append(f"native CONV_3D_TRANSPOSE TFLite baseline: {base['latency_ms']:.3f} ms "
                     f"({', '.join(base['ops'])})")
        for row in report["artifacts"]:
            if "ops" in row:
                lines.append(f"{row['artifact']:<22} {row['speedup_vs_native_tflite']:5.1f}x "
                             f"faster than the baseline; ops: {', '.join(row['ops'])}")
    for row in report["artifacts"]:
        if "output_range" in row and not row["within_tolerance"]:
            lines.append(f"{row['artifact']:<22} output range {_interval(row['output_range'])}; "
                         f"the Keras output spans {_interval(row['keras_output_range'])}")
    for row in report["artifacts"]:
        if "nodes" in row:
            lines.append(f"{row['artifact']:<22} nodes: {', '.join(row['nodes'])}")
    if "serving" in report:
        s = report["serving"]
        lines += [f"TF Serving: {s['path'] or 'not published'} "
                  f"({s['warmup_records']} warmup records; ops the server lacks: "
                  f"{', '.join(s['ops_missing_in_server']) or 'none'})",
                  "REST:", s["rest_request"], "gRPC:", s["grpc_request"]]
    lines.append("all artifacts within tolerance" if report["all_within_tolerance"]
                 else "SOME ARTIFACTS EXCEED THEIR TOLERANCE: nothing was published")
    return "\n".join(lines)


def _calibration_samples(calibration, input_shape):
    """The int8 calibration samples: ``calibration`` checked (shape, finite),
    or synthetic uniform [0, 1) data when it is None."""
    if calibration is None:
        # Min/max calibration: enough samples that unseen inputs rarely exceed the range.
        return np.random.default_rng(0).uniform(
            size=(SYNTHETIC_CALIBRATION_SAMPLES, *input_shape)).astype(np.float32)
    try:
        samples = np.asarray(calibration, np.float32)
    except (TypeError, ValueError) as error:
        raise ExportError(f"must be numeric: {error}", "calibration",
                          _describe(calibration)) from None
    if samples.ndim != len(input_shape) + 1 or samples.shape[1:] != input_shape:
        raise ExportError(f"must have shape (n, {', '.join(map(str, input_shape))}), the "
                          "model's input with a leading sample axis", "calibration",
                          _describe(samples))
    if len(samples) == 0:
        raise ExportError("holds no sample", "calibration", _describe(samples))
    bad = int(np.size(samples) - np.count_nonzero(np.isfinite(samples)))
    if bad:
        raise ExportError(f"holds {bad} non-finite values (NaN or Inf; also values beyond "
                          "float32's range); int8 ranges need finite samples", "calibration",
                          _describe(samples))
    return samples


def _describe(array):
    """A short stand-in for an array in messages (never its values)."""
    shape = getattr(array, "shape", None)
    return f"<array of shape {tuple(shape)}>" if shape is not None else type(array).__name__


def _error_metrics(actual, expected, tolerance, scale):
    """Largest error of ``actual``, relative to ``scale`` of ``expected``:
    "max |output|" or "output range" (how int8 quantization is judged)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    max_abs = float(np.abs(actual - expected).max())
    size = (expected.max() - expected.min()) if scale == "output range" else np.abs(expected).max()
    relative = max_abs / max(float(size), 1e-30)
    if not np.isfinite(relative):
        relative = float("inf")
    return {"max_abs": max_abs, "relative": relative, "tolerance": tolerance, "scale": scale}


def _artifact_row(label, staged, name, path, publish=True, error=None, **extra):
    """One report row for the staged file or directory ``name``, to be
    published to ``path`` if ``publish``."""
    source = staged.path_of(name)
    size = (os.path.getsize(source) if os.path.isfile(source)
            else sum(os.path.getsize(os.path.join(d, f))
                     for d, _, files in os.walk(source) for f in files))
    row = {"artifact": label, "path": path, "size_bytes": size,
           "staged": name if publish else None, **extra}
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


def _interval(pair):
    return f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


def _within(row):
    """A report row's "ok" column: yes, NO, or blank where nothing was judged."""
    if "within_tolerance" not in row:
        return ""
    return "yes" if row["within_tolerance"] else "NO"
