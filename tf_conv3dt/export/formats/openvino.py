"""The OpenVINO IR files, float32 and NNCF's int8, verified and timed in OpenVINO Runtime."""

import dataclasses
import os
from typing import NamedTuple, Optional

from tf_conv3dt.export import openvino
from tf_conv3dt.export.formats import Format, refuse_a_directory, register
from tf_conv3dt.export.formats.tflite import check_tolerances
from tf_conv3dt.export.report import EXACT, Row, error_metrics
from tf_conv3dt.export.signature import ForcedLowering
from tf_conv3dt.ops import cpu

# Beside model.onnx: each IR's .xml, and the .bin of its weights.
FILES = {"float32": "model.xml", "int8": "model_int8.xml"}


@dataclasses.dataclass(kw_only=True)
class OpenVINORow(Row):
    precision: str
    """What the CPU plugin computed in when it was verified and timed: "f32"
    (asked for explicitly, as it would otherwise run bfloat16 on CPUs with
    AVX512_BF16 or AMX), or for int8 the runtime precisions of its
    convolutions and matmuls ("u8/i8", from the compiled runtime graph)."""
    ops: list
    """The IR's distinct operation types, in the graph's order."""
    int8_instructions: Optional[str] = None
    """For int8: the CPU's int8 dot-product instructions it was timed on
    ("amx", "vnni", or "none": 16-bit sums of u8 x i8 products, where int8
    gains little over float32)."""


class _Staged(NamedTuple):
    mode: str
    xml: str
    tolerance: dict


class OpenVINOFiles(Format):
    """``model.xml`` (float32) and ``model_int8.xml`` (NNCF's post-training
    int8, calibrated on the export's samples), each with its ``.bin``, any
    batch, for OpenVINO Runtime."""

    name = "openvino"
    # What OpenVINO's CPU plugin ran fastest (benchmarks/bench_openvino.py):
    # GEMM's MatMuls, 0.19-1.03x keras.layers.Conv3DTranspose's
    # ConvolutionBackpropData, except at stride 1, where they ran 1.3-1.7x it
    # and the native op is that node itself.
    lowering = ForcedLowering({"kernel < stride": "gemm", "kernel == stride": "gemm",
                               "stride 1": "native", "overlapping": "gemm"})
    packages = openvino.PACKAGES
    extra = "openvino"
    by_default = False

    def check_destination(self, job):
        for xml in FILES.values():
            for name in (xml, openvino.weights_of(xml)):
                refuse_a_directory(os.path.join(job.out_dir, name), job.out_dir)

    def stage(self, run):
        lowering = self.lowering_for(run.job.implementation)
        run.step(f"converting OpenVINO IR (lowering: {lowering}, openvino.convert_model)")
        converted = openvino.convert(run.job.model, lowering)
        openvino.save(converted, run.staging.path_of(FILES["float32"]))
        yield _Staged("float32", FILES["float32"], EXACT)
        run.step(f"quantizing OpenVINO IR to int8 (NNCF, {len(run.job.samples)} samples)")
        openvino.save(openvino.quantize(converted, run.job.samples),
                      run.staging.path_of(FILES["int8"]))
        yield _Staged("int8", FILES["int8"], check_tolerances(run.job.tolerances)["int8"])

    def verify(self, run, staged):
        run.step(f"  running OpenVINO {staged.mode} at batch {len(run.inputs)} and 1")
        path = run.staging.path_of(staged.xml)
        compiled = openvino.compile(path)
        int8 = staged.mode == "int8"
        return [OpenVINORow(
            artifact=f"openvino {staged.mode}", path=os.path.join(run.job.out_dir, staged.xml),
            size_bytes=(run.staging.size_of(staged.xml)
                        + run.staging.size_of(openvino.weights_of(staged.xml))),
            staged=staged.xml,
            error=error_metrics(openvino.run(compiled, run.inputs), run.expected,
                                **staged.tolerance),
            latency_ms=openvino.latency_ms(compiled, batch=1),
            latency_runtime="OpenVINO Runtime CPU, 2 threads, batch 1 of any",
            precision=openvino.compute_precision(compiled) if int8 else "f32",
            ops=openvino.op_types(openvino.read(path)),
            int8_instructions=cpu.int8_dot_products() if int8 else None)]

    def claim(self, run):
        # Each IR's weights go into place before its .xml, which names them.
        for row in run.report.rows:
            if row.artifact.startswith("openvino ") and row.staged is not None:
                run.staging.publish(openvino.weights_of(row.staged),
                                    openvino.weights_of(row.path))

    def notes(self, report):
        rows = [row for row in report["artifacts"] if row["artifact"].startswith("openvino ")]
        lines = [f"{row['artifact']:<22} computes in {row['precision']}; ops: "
                 f"{', '.join(row['ops'])}" for row in rows]
        return lines + [f"{row['artifact']:<22} int8 instructions here: "
                        f"{row['int8_instructions']}" for row in rows
                        if row.get("int8_instructions")]


register(OpenVINOFiles())
