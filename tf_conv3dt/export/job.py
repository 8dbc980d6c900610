"""An export's arguments, each checked, and its destination prepared, before anything is written."""

import dataclasses
import math
import os

import numpy as np

from tf_conv3dt import shapes
from tf_conv3dt.export import formats as registry
from tf_conv3dt.export import staging
from tf_conv3dt.export.errors import ExportError, unwritable
from tf_conv3dt.ops import lowerings

SYNTHETIC_CALIBRATION_SAMPLES = 128
REPORT = "report.json"


def implementations():
    """What ``implementation=`` takes, and the command's ``--implementation``
    offers: each registered lowering (``ops.lowerings``), "auto", which lets
    each layer choose by this host's rule, and "tuned", which times each
    "auto" layer of the SavedModel on this host and traces its fastest
    forward (``formats.savedmodel``); the other formats then take their
    defaults, since TensorFlow's timings say nothing of their runtimes'."""
    return (*lowerings.names(), "auto", "tuned")


@dataclasses.dataclass(frozen=True)
class Job:
    """``export_model``'s arguments, checked: what every format reads."""

    model: object
    out_dir: str
    formats: tuple
    """The ``formats.Format`` objects asked for, in registration order."""
    name: str
    version: object
    implementation: object
    input_shape: tuple
    """The model's input shape, without the batch: static."""
    batch_size: int
    dynamic_batch: bool
    tolerances: object
    """As given: ``formats.tflite.check_tolerances`` applies them."""
    samples: np.ndarray
    """The int8 calibration samples, the first of which verify every file."""

    @property
    def report_path(self):
        return os.path.join(self.out_dir, REPORT)


def checked(model, out_dir, *, formats, name, version, implementation, batch_size,
            dynamic_batch, tolerances, calibration):
    """The :class:`Job` of these ``export_model`` arguments, ``out_dir`` made
    ready for it; an ExportError names the argument at fault, and nothing is
    written then."""
    chosen = registry.chosen(formats)
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
    samples = _calibration_samples(calibration, input_shape)
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ExportError("must be a directory path", "out_dir", out_dir)
    job = Job(model, os.fspath(out_dir), chosen, name, version, implementation, input_shape,
              batch_size, dynamic_batch, tolerances, samples)
    for format_ in registry.every():
        format_.check_arguments(job)
    _prepare_destination(job, out_dir)
    return job


def _check_batch_size(batch_size, input_shape):
    if (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
            or batch_size * math.prod(input_shape) > shapes.MAX_LENGTH):
        raise ExportError(
            "must be a positive integer, at most "
            f"{shapes.MAX_LENGTH // math.prod(input_shape)} for this input shape "
            f"(a batch of at most {shapes.MAX_LENGTH} values)", "batch_size", batch_size)


def _prepare_destination(job, out_dir):
    """Checks that every chosen format can publish under ``job.out_dir``, then
    creates it and the formats' directories, checks that they are writable
    and removes what killed exports left there. ``out_dir``: as given, for
    the errors."""
    try:
        if os.path.lexists(job.out_dir) and not os.path.isdir(job.out_dir):
            raise ExportError("is a file; it must be a directory", "out_dir", out_dir)
        registry.refuse_a_directory(job.report_path, out_dir)
        for format_ in job.formats:
            format_.check_destination(job)
        os.makedirs(job.out_dir, exist_ok=True)
        directories = [format_.directory(job) for format_ in job.formats
                       if format_.directory(job) is not None]
        for directory in directories:
            os.makedirs(directory, exist_ok=True)
        for directory in (job.out_dir, *directories):
            if not os.access(directory, os.W_OK | os.X_OK):
                raise ExportError(f"{directory} is not writable", "out_dir", out_dir)
        staging.remove_stale(*directories)
    except OSError as error:
        raise unwritable(out_dir, error) from None


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
