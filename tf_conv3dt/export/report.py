"""The export's report: a typed row per artifact, its error against the Keras model, report.json.

Each format adds its rows (a :class:`Row`, or a subclass with the fields
its files have) and its sections (dataclasses) while it is staged and
verified; :meth:`Report.as_dict` is what report.json holds and
``export_model`` returns.
"""

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

# The scales an error is judged against: the Keras output's largest
# magnitude, or (int8 quantization) its range.
MAX_MAGNITUDE = "max |output|"
OUTPUT_RANGE = "output range"
# What a file that computes in float32 as the Keras model does is held to.
EXACT = {"tolerance": 1e-5, "scale": MAX_MAGNITUDE}


class Error(NamedTuple):
    """An artifact's largest error against the Keras model, and what it is judged by."""

    max_abs: float
    relative: float
    """``max_abs`` relative to ``scale`` of the Keras output."""
    tolerance: float
    scale: str

    @property
    def within(self):
        return self.relative <= self.tolerance


def error_metrics(actual, expected, tolerance, scale):
    """The :class:`Error` of ``actual`` against ``expected``, relative to
    ``scale`` (``MAX_MAGNITUDE`` or ``OUTPUT_RANGE``) of ``expected``."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    max_abs = float(np.abs(actual - expected).max())
    size = (expected.max() - expected.min()) if scale == OUTPUT_RANGE else np.abs(expected).max()
    relative = max_abs / max(float(size), 1e-30)
    if not np.isfinite(relative):
        relative = float("inf")
    return Error(max_abs, relative, tolerance, scale)


# The fields report.json holds even when None (a SavedModel not yet published has no path).
_ALWAYS = ("artifact", "path", "size_bytes")
# A field's metadata key that puts it after the error in report.json: what explains the error.
EXPLAINS_ERROR = "explains_error"


@dataclasses.dataclass(kw_only=True)
class Row:
    """One artifact: what it is, where it is published, its size, and what
    verifying it found. A format with more to say subclasses it; report.json
    holds every field but ``staged``, those left None omitted, in their
    order, then the error, then the fields whose metadata has ``EXPLAINS_ERROR``."""

    artifact: str
    path: Optional[str]
    """Where it is published; None until then for a SavedModel version."""
    size_bytes: int
    error: Optional[Error] = None
    latency_ms: Optional[float] = None
    latency_runtime: Optional[str] = None
    """What ran it for ``latency_ms``, and at what batch."""
    staged: Optional[str] = None
    """Its name in the staging directory, renamed to ``path`` on publishing;
    None where its format publishes it itself (``Format.claim``)."""

    def as_dict(self):
        fields = [field for field in dataclasses.fields(self)
                  if field.name not in ("error", "staged")]
        row = self._fields_as_dict(f for f in fields if not f.metadata.get(EXPLAINS_ERROR))
        if self.error is not None:
            row.update(error=self.error._asdict(), within_tolerance=self.error.within)
        row.update(self._fields_as_dict(f for f in fields if f.metadata.get(EXPLAINS_ERROR)))
        return row

    def _fields_as_dict(self, fields):
        return {field.name: getattr(self, field.name) for field in fields
                if getattr(self, field.name) is not None or field.name in _ALWAYS}


class Report:
    """What the export found: its rows, in the order they were verified, and
    the sections formats add ({name: dataclass}, in the order they are added)."""

    def __init__(self, model_name, input_shape):
        self.head = {"model": model_name, "input_shape": input_shape}
        self.rows = []
        self.sections = {}

    def all_within_tolerance(self):
        return all(row.error is None or row.error.within for row in self.rows)

    def as_dict(self, published):
        """report.json."""
        return {**self.head, "artifacts": [row.as_dict() for row in self.rows],
                **{name: dataclasses.asdict(section) for name, section in self.sections.items()},
                "all_within_tolerance": self.all_within_tolerance(), "published": published}
