"""The model.onnx format: the serving signature through tf2onnx, verified in ONNX Runtime."""

import dataclasses
import os

from tf_conv3dt.export import onnx
from tf_conv3dt.export.report import EXACT, Row, error_metrics
from tf_conv3dt.export.formats import Format, refuse_a_directory, register
from tf_conv3dt.export.signature import ForcedLowering

FILE = "model.onnx"


@dataclasses.dataclass(kw_only=True)
class ONNXRow(Row):
    nodes: list
    """The graph's distinct node types, in first-use order."""


class ONNXFile(Format):
    """model.onnx (opset ``onnx.OPSET``, any batch), for ONNX Runtime and what reads ONNX."""

    name = "onnx"
    # GEMM's MatMuls: ONNX Runtime's CPU provider runs them faster than the
    # native op's one ConvTranspose node (benchmarks/bench_onnx.py).
    lowering = ForcedLowering("gemm")
    packages = ("tf2onnx", "onnx", "onnxruntime")
    extra = "onnx"

    def check_destination(self, job):
        refuse_a_directory(os.path.join(job.out_dir, FILE), job.out_dir)

    def stage(self, run):
        lowering = self.lowering_for(run.job.implementation)
        run.step(f"converting ONNX (lowering: {lowering}, tf2onnx, opset {onnx.OPSET})")
        model_bytes = onnx.convert(run.job.model, lowering)
        with open(run.staging.path_of(FILE), "wb") as f:
            f.write(model_bytes)
        yield model_bytes

    def verify(self, run, staged):
        run.step(f"  running it in ONNX Runtime at batch {len(run.inputs)} and 1")
        return [ONNXRow(
            artifact="onnx", path=os.path.join(run.job.out_dir, FILE),
            size_bytes=run.staging.size_of(FILE), staged=FILE,
            error=error_metrics(onnx.run(staged, run.inputs), run.expected,
                                       **EXACT),
            latency_ms=onnx.latency_ms(staged, batch=1),
            latency_runtime="ONNX Runtime CPU, batch 1 of any", nodes=onnx.node_types(staged))]

    def notes(self, report):
        return [f"{row['artifact']:<22} nodes: {', '.join(row['nodes'])}"
                for row in report["artifacts"] if "nodes" in row]


register(ONNXFile())
