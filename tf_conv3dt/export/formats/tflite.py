"""The TFLite files, one per mode, verified in LiteRT and timed against the native op's file."""

import dataclasses
import math
import numbers
import os
from typing import NamedTuple, Optional

from tf_conv3dt.export import tflite
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.formats import Format, register
from tf_conv3dt.export.report import (EXACT, EXPLAINS_ERROR, MAX_MAGNITUDE, OUTPUT_RANGE, Row,
                                      error_metrics)
from tf_conv3dt.export.signature import ForcedLowering

DIRECTORY = "tflite"
# Each mode's default tolerance (``tolerances=`` replaces it): the largest
# error relative to the Keras output's largest magnitude, or for int8 to its range.
TOLERANCES = {
    "float32": EXACT,
    "float16": {"tolerance": 1e-2, "scale": MAX_MAGNITUDE},
    "dynamic_range": {"tolerance": 1e-2, "scale": MAX_MAGNITUDE},
    "int8": {"tolerance": 2e-2, "scale": OUTPUT_RANGE},
}


@dataclasses.dataclass(kw_only=True)
class TFLiteRow(Row):
    speedup_vs_native_tflite: float
    ops: list
    """``op_summary`` of the file's ops."""
    output_range: Optional[list] = dataclasses.field(default=None,
                                                     metadata={EXPLAINS_ERROR: True})
    """For an integer output, the real values it can represent: what calibration gave it."""
    keras_output_range: Optional[list] = dataclasses.field(default=None,
                                                           metadata={EXPLAINS_ERROR: True})
    """Beside ``output_range``, the Keras output's extremes it had to hold."""


@dataclasses.dataclass
class Baseline:
    """The report's "tflite_baseline": the model converted through the native
    op, as ``keras.layers.Conv3DTranspose`` converts (CONV_3D_TRANSPOSE)."""

    latency_ms: float
    ops: list


class _Staged(NamedTuple):
    mode: str
    name: str
    flatbuffer: bytes
    tolerance: dict
    baseline_ms: float


class TFLiteFiles(Format):
    """``tflite/model_<mode>.tflite`` for each mode of ``tflite.MODES``: a
    static batch, or with ``dynamic_batch`` any; int8 is integer end to end."""

    name = "tflite"
    # GEMM: FULLY_CONNECTED products, integer end to end in int8 and ~5x the
    # float CONV_3D_TRANSPOSE in LiteRT.
    lowering = ForcedLowering("gemm")

    def lowering_of(self, mode, implementation):
        """The lowering of mode ``mode``'s file: :meth:`lowering_for`, except
        that int8 sums each stride phase inside one product (GEMM's int8 form:
        int32 accumulation) rather than requantizing after every tap's addition."""
        lowering = self.lowering_for(implementation)
        return ForcedLowering("gemm_int8") if mode == "int8" and lowering.name == "gemm" \
            else lowering

    def check_arguments(self, job):
        check_tolerances(job.tolerances)

    def directory(self, job):
        return os.path.join(job.out_dir, DIRECTORY)

    def stage(self, run):
        job = run.job
        shape = (None if job.dynamic_batch else job.batch_size, *job.input_shape)
        run.step("converting the native-op baseline (CONV_3D_TRANSPOSE, as keras.layers."
                 "Conv3DTranspose converts)")
        baseline = tflite.convert(job.model, "float32", shape, ForcedLowering("native"),
                                  scratch_dir=run.staging.path)
        baseline_ms = tflite.latency_ms(baseline, batch=job.batch_size)
        run.report.sections["tflite_baseline"] = Baseline(baseline_ms,
                                                          op_summary(tflite.op_list(baseline)))
        tolerances = check_tolerances(job.tolerances)
        files = tflite.convert_each(
            job.model, {mode: self.lowering_of(mode, job.implementation) for mode in tolerances},
            shape, job.samples, scratch_dir=run.staging.path)
        for mode, tolerance in tolerances.items():
            run.step(f"converting TFLite {mode}")
            _, flatbuffer = next(files)
            name = os.path.join(DIRECTORY, f"model_{mode}.tflite")
            with open(run.staging.path_of(name), "wb") as f:
                f.write(flatbuffer)
            yield _Staged(mode, name, flatbuffer, tolerance, baseline_ms)

    def verify(self, run, staged):
        job = run.job
        latency = tflite.latency_ms(staged.flatbuffer, batch=job.batch_size)
        covered = tflite.output_range(staged.flatbuffer)
        # An integer output: what calibration gave it, beside what it must hold.
        ranges = {} if covered is None else {
            "output_range": covered,
            "keras_output_range": [float(run.expected.min()), float(run.expected.max())]}
        return [TFLiteRow(
            artifact=f"tflite {staged.mode}",
            path=os.path.join(self.directory(job), os.path.basename(staged.name)),
            size_bytes=run.staging.size_of(staged.name), staged=staged.name,
            error=error_metrics(tflite.run(staged.flatbuffer, run.inputs, batch=job.batch_size),
                                run.expected, **staged.tolerance),
            latency_ms=latency,
            latency_runtime=(f"LiteRT+XNNPACK, batch {job.batch_size}"
                             f"{' of any' if job.dynamic_batch else ''}"),
            speedup_vs_native_tflite=staged.baseline_ms / latency,
            ops=op_summary(tflite.op_list(staged.flatbuffer)), **ranges)]

    def notes(self, report):
        if "tflite_baseline" not in report:
            return []
        base = report["tflite_baseline"]
        lines = [f"native CONV_3D_TRANSPOSE TFLite baseline: {base['latency_ms']:.3f} ms "
                 f"({', '.join(base['ops'])})"]
        rows = [row for row in report["artifacts"] if "speedup_vs_native_tflite" in row]
        lines += [f"{row['artifact']:<22} {row['speedup_vs_native_tflite']:5.1f}x "
                  f"faster than the baseline; ops: {', '.join(row['ops'])}" for row in rows]
        return lines + [f"{row['artifact']:<22} output range {_interval(row['output_range'])}; "
                        f"the Keras output spans {_interval(row['keras_output_range'])}"
                        for row in rows if "output_range" in row and not row["within_tolerance"]]


def check_tolerances(tolerances):
    """``TOLERANCES`` with ``tolerances`` ({mode: tolerance}) applied."""
    if tolerances is None:
        return dict(TOLERANCES)
    if not isinstance(tolerances, dict):
        raise ExportError("must be a dict {TFLite mode: tolerance}", "tolerances", tolerances)
    checked = dict(TOLERANCES)
    for mode, tolerance in tolerances.items():
        if mode not in TOLERANCES:
            raise ExportError(f"{mode!r} is not a TFLite mode; choose among "
                              f"{', '.join(TOLERANCES)}", "tolerances", tolerances)
        if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
                or not math.isfinite(tolerance) or tolerance < 0):
            raise ExportError(f"the tolerance of {mode} must be a finite number >= 0",
                              "tolerances", tolerances)
        checked[mode] = dict(TOLERANCES[mode], tolerance=float(tolerance))
    return checked


def op_summary(op_list):
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


register(TFLiteFiles())
