"""The TF Serving format: a SavedModel version, verified where tf_conv3dt cannot be imported.

Its staged directory is published as the next free version (or the one
asked for) by a rename of its own (``serving.publish_version``), before any
other file is replaced: the one step of publishing that can still be
refused. The same SavedModel loads as a ``TFSMLayer``.
"""

import dataclasses
import io
import os
import subprocess
import sys
import tempfile
from typing import Optional

import numpy as np

from tf_conv3dt.export import serving, staging
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.formats import Format, register
from tf_conv3dt.export.report import EXACT, Row, error_metrics
from tf_conv3dt.export.signature import ForcedLowering

STAGED = "saved_model"
# Its rows: the SavedModel as the model server loads it, and as a TFSMLayer.
ARTIFACTS = ("saved_model", "tfsm_layer")


@dataclasses.dataclass
class Serving:
    """The report's "serving" section: where the version went, what it holds,
    and the requests TF Serving accepts for it."""

    path: Optional[str]
    version: Optional[int]
    ops: list
    ops_missing_in_server: list
    warmup_records: int
    rest_request: str
    grpc_request: str


class SavedModel(Format):
    """``serving/<name>/<version>/``: signature ``serving_default`` with a
    dynamic batch (and spatial sizes where the model traces with any), and
    warmup records."""

    name = "savedmodel"
    # The sub-pixel lowering: its serving forward was least slow, at worst,
    # against the fastest on every CPU kind measured (benchmarks/bench_serving.py;
    # docs/performance.md), since the export cannot see the CPU that will
    # serve. Its depthwise layers take GEMM's one call, the fastest forward on
    # each CPU kind (benchmarks/bench_groups.py), where the sub-pixel lowering
    # would run one call per channel.
    lowering = ForcedLowering("subpixel", depthwise_as_gemm=True)

    def traced(self, implementation, batch):
        """``(lowering, tuning batch)`` of ``serving.write_version`` when
        ``implementation`` is asked for: "tuned" traces "auto" with each of
        its layers timed at ``batch`` on this machine; anything else
        :meth:`lowering_for`, untimed."""
        if implementation == "tuned":
            return ForcedLowering("auto"), batch
        return self.lowering_for(implementation), None

    def check_arguments(self, job):
        serving.check_model_name(job.name)
        serving.check_version(job.version)

    def check_destination(self, job):
        serving.check_version_free(self.directory(job), job.version)

    def directory(self, job):
        return os.path.join(job.out_dir, "serving", job.name)

    def stage(self, run):
        job = run.job
        lowering, tuning_batch = self.traced(job.implementation, job.batch_size)
        detail = (f"tuned, timing each auto layer's forward at batch {tuning_batch}"
                  if tuning_batch is not None else lowering)
        run.step(f"writing TF Serving SavedModel (lowering: {detail})")
        path = run.staging.path_of(STAGED)
        found = serving.write_version(job.model, path, job.name, lowering,
                                      warmup_batches=[run.inputs[:1], run.inputs],
                                      tuning_batch=tuning_batch)
        # What each call runs, and why (ops.select), once: a second trace
        # (the signature's, the warmup's) selects the same again.
        for line in dict.fromkeys(_runs(scope, selection)
                                  for scope, selection in found["selections"]):
            run.step(f"  {line}")
        run.step(f"  {len(found['ops'])} op types, all in the model server")
        examples = serving.request_examples(path, job.name)
        run.report.sections["serving"] = Serving(
            None, None, found["ops"], found["missing_in_server"],
            len(serving.read_warmup_requests(path)), examples["rest"], examples["grpc"])
        yield STAGED

    def verify(self, run, staged):
        run.step("  running it in a fresh process without tf_conv3dt (tf.saved_model.load, "
                 "TFSMLayer)")
        outputs = run_in_fresh_process(run.staging.path_of(staged), run.inputs,
                                       scratch_dir=run.staging.path)
        size = run.staging.size_of(staged)
        # Not staged for a rename: claim publishes them as a version.
        return [Row(artifact="saved_model", path=None, size_bytes=size,
                    error=error_metrics(outputs["saved_model"], run.expected, **EXACT),
                    latency_ms=float(outputs["latency_ms"]), latency_runtime="TF, batch 1"),
                Row(artifact="tfsm_layer", path=None, size_bytes=size,
                    error=error_metrics(outputs["tfsm_layer"], run.expected, **EXACT))]

    def claim(self, run):
        final = serving.publish_version(run.staging, STAGED, self.directory(run.job),
                                        run.job.version)
        section = run.report.sections["serving"]
        section.path, section.version = final, int(os.path.basename(final))
        for row in run.report.rows:
            if row.artifact in ARTIFACTS:
                row.path = final

    def details(self, report):
        if "serving" not in report:
            return []
        s = report["serving"]
        return [f"TF Serving: {s['path'] or 'not published'} "
                f"({s['warmup_records']} warmup records; ops the server lacks: "
                f"{', '.join(s['ops_missing_in_server']) or 'none'})",
                "REST:", s["rest_request"], "gRPC:", s["grpc_request"]]


SAVEDMODEL = register(SavedModel())


def write_serving_version(model, base_dir, name, version=None, warmup_batches=(),
                          implementation=None):
    """Writes ``model`` as ``<base_dir>/<name>/<version>/`` and returns the path.

    Args:
      model: a Keras model with one input and one output.
      base_dir: the directory TF Serving's ``--model_base_path`` points above.
      name: the model name (a directory name).
      version: an integer, refused if present; None takes the next integer.
      warmup_batches: input arrays written as PredictionLog warmup records.
      implementation: the lowering traced for tf_conv3dt layers, as
        ``export_model`` takes it: None for the export's SavedModel default
        (the sub-pixel lowering, depthwise layers as GEMM's one call), a
        lowering, "auto", or "tuned" (each "auto" layer timed at batch 1).

    Raises:
      ExportError: a bad name or version, an existing version, or a graph
        that uses ops the model server does not have. Nothing is left under
        a numeric name.
    """
    model_dir = os.path.join(base_dir, serving.check_model_name(name))
    serving.check_version_free(model_dir, serving.check_version(version))
    os.makedirs(model_dir, exist_ok=True)
    lowering, tuning_batch = SAVEDMODEL.traced(implementation, batch=1)
    with staging.Staging(model_dir) as staged:
        serving.write_version(model, staged.path_of("version"), name, lowering,
                              warmup_batches, tuning_batch)
        return serving.publish_version(staged, "version", model_dir, version)


def run_in_fresh_process(saved_model_dir, x, scratch_dir=None):
    """Outputs of the SavedModel and TFSMLayer in a process without tf_conv3dt
    (its files in a temporary directory under ``scratch_dir``)."""
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fresh_process_check.py")
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


def _runs(scope, selection):
    """One line of what a traced call runs: where it was timed, its
    decision, else its layer, lowering and why."""
    if selection.decision is not None:
        return selection.decision.describe(serving=True)
    return f"{scope.split('/')[-1] or 'call'}: {selection.runs} ({selection.why})"
