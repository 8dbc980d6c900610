"""The export run: each format asked for staged and verified, then all of them published or none.

Under ``out_dir`` an export writes what its formats write (by default
``model.keras``, a TF Serving version under ``serving/<name>/<version>/``,
``tflite/model_<mode>.tflite`` for each TFLite mode and ``model.onnx``) and
``report.json``, in three steps: every argument, and the destination, is
checked before anything is written (``job.checked``); the artifacts are
written and verified in a staging directory (``staging.Staging``); they are
published by rename only when every one is within its tolerance. It knows
no format: each is a ``formats.Format``.
"""

import json
import time
import warnings
from typing import NamedTuple

import numpy as np

from tf_conv3dt.export import staging
from tf_conv3dt.export.errors import ExportError, unwritable, write_failure
from tf_conv3dt.export.formats import Run
from tf_conv3dt.export.job import REPORT, checked
from tf_conv3dt.export.report import Report
from tf_conv3dt.ops import tuning

VERIFICATION_SAMPLES = 4


class Progress(NamedTuple):
    """A step of an export, as ``export_model`` reports it to ``progress``;
    printed, the line the export command prints."""

    seconds: float
    """Since the export began."""
    text: str
    publishing: bool = False
    """Whether the artifacts are being moved to their final names now: the
    step after which raising no longer stops the export."""

    def __str__(self):
        return f"[{self.seconds:6.1f}s] {self.text}"


# Its checks call the model, which need not time "auto" (its files hold the
# lowering they are given; "tuned" times regardless).
@tuning.switched(False)
def export_model(model, out_dir, name="conv3dt", version=None, formats=None,
                 calibration=None, batch_size=1, implementation=None, dynamic_batch=False,
                 tolerances=None, progress=None):
    """Writes, verifies and publishes every artifact of ``model`` under ``out_dir``.

    Args:
      model: a Keras model with one input and one output.
      out_dir: the output directory (created; it must be writable).
      name: the TF Serving model name.
      version: the TF Serving version (None: the next free one, retried if a
        concurrent export takes it first).
      formats: names of registered formats (``formats.names()``: keras,
        savedmodel, tflite, onnx, openvino), a sequence or a comma-separated
        string; None for those written by default (``formats.defaults()``:
        all but openvino, which needs its extra).
      calibration: int8 calibration samples ``(n, *input_shape)``, finite;
        None uses synthetic uniform [0, 1) data, with a warning.
      batch_size: the TFLite files' static batch size, or with
        ``dynamic_batch`` the batch they are verified and timed at.
      implementation: the lowering traced into every file that traces the
        model: one of ``job.implementations()``, or None for each format's
        own (``Format.lowering``). "tuned" times the SavedModel's "auto"
        layers here, at ``batch_size``: run it on a machine of the kind that
        will serve.
      dynamic_batch: TFLite files that take any batch (shape signature -1;
        ``interpreter.resize_tensor_input`` before ``allocate_tensors``).
      tolerances: ``{TFLite mode: tolerance}`` replacing the defaults of
        ``formats.tflite.TOLERANCES`` for those modes (same scale). The int8
        default, 2% of the output range, holds for a few layers; a deep
        network's rounding adds up, and a sigmoid output turns small
        differences near 0.5 into large ones: judge such a file by its task
        metric, then state the error you accept, e.g. ``{"int8": 0.25}``.
      progress: callable taking each step as a :class:`Progress`, or None. It
        may raise (a KeyboardInterrupt, say) to abort: it is called before
        publishing (``Progress.publishing``), and nothing is published after
        an exception.

    Returns:
      The report (also written to ``out_dir/report.json``). When an artifact
      exceeds its tolerance, ``report["published"]`` is False and no
      artifact is written (the report is).

    Raises:
      ExportError: a bad argument (``argument`` and ``value`` name it), an
        unwritable destination, or a model that cannot be exported. Nothing
        is written then. A write that fails while the artifacts are staged
        (a full disk or quota, an I/O error, a filesystem turned read-only:
        ``errors.WRITE_ERRNOS``, from Python's writes or TensorFlow's) is one
        too, naming ``out_dir`` and the OS reason: nothing is published, and
        the staging directory is removed.
    """
    job = checked(
        model, out_dir, formats=formats, name=name, version=version,
        implementation=implementation, batch_size=batch_size, dynamic_batch=dynamic_batch,
        tolerances=tolerances, calibration=calibration)
    started = time.perf_counter()

    def step(text, publishing=False):
        if progress is not None:
            progress(Progress(time.perf_counter() - started, text, publishing))

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
    inputs = job.samples[:VERIFICATION_SAMPLES]
    expected = np.asarray(model(inputs, training=False))
    report = Report(model.name, list(job.input_shape))
    try:
        staged = staging.Staging(job.out_dir)
    except OSError as error:  # e.g. an immutable directory, which root cannot write either
        raise unwritable(out_dir, error) from None
    with staged:
        run = Run(job, staged, report, inputs, expected, step)
        try:
            for format_ in job.formats:
                for artifact in format_.stage(run):
                    report.rows += format_.verify(run, artifact)
        except Exception as error:  # noqa: BLE001 - only a failed write is re-raised as ours
            reason = write_failure(error)
            if reason is None:
                raise
            raise ExportError(f"cannot be written: {reason}; nothing was published",
                              "out_dir", out_dir) from None
        published = report.all_within_tolerance()
        if published:
            step("publishing", publishing=True)  # the caller's last chance to abort
            _publish(run)
        else:
            step("an artifact exceeds its tolerance: nothing is published")
        step("writing report.json")
        result = report.as_dict(published)
        try:
            with open(staged.path_of(REPORT), "w") as f:
                json.dump(result, f, indent=1)
        except OSError as error:
            raise unwritable(out_dir, error) from None
        staged.publish(REPORT, job.report_path)
    step("done")
    return result


def _publish(run):
    """Moves every staged artifact to its final name: first what may still be
    refused (``Format.claim``), before any file is replaced."""
    for format_ in run.job.formats:
        format_.claim(run)
    for row in run.report.rows:
        if row.staged is not None:
            run.staging.publish(row.staged, row.path)
