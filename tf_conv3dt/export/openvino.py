"""OpenVINO conversion of Keras models, NNCF's post-training int8, and OpenVINO Runtime runs.

The IR holds the serving signature, as the ONNX file does: its input and
output carry the model's names and the batch axis is dynamic (any batch).
Needs the ``openvino`` extra (openvino, nncf), imported on first use.
"""

import os
import time

import numpy as np
import tensorflow as tf

from tf_conv3dt.export import signature

PACKAGES = ("openvino", "nncf")
# The layer types that compute: what an int8 IR runs in int8.
COMPUTING = ("Convolution", "Deconvolution", "FullyConnected", "MatMul")


def convert(model, lowering):
    """The ``openvino.Model`` of ``model``'s serving signature, traced under
    ``lowering`` (a ``signature.ForcedLowering``)."""
    import openvino

    spec = signature.serving_spec(model)
    serve = tf.function(signature.serving_function(model, lowering), input_signature=[spec])
    return openvino.convert_model(serve.get_concrete_function())


def quantize(ov_model, samples):
    """``ov_model`` quantized to int8 by NNCF's post-training quantization,
    calibrated on ``samples`` (one sample at a time, as the batch is
    dynamic). Weights keep 7 bits of range (NNCF's overflow fix on every
    layer): CPUs without VNNI or AMX multiply u8 by i8 into 16-bit sums,
    which saturate on full-range weights, and an IR may be served on any
    CPU (measured on an AVX2-only EPYC: 18% of the output range off
    without it, under 1% with it)."""
    import nncf
    from nncf.quantization.advanced_parameters import (AdvancedQuantizationParameters,
                                                       OverflowFix)

    samples = np.asarray(samples, np.float32)
    return nncf.quantize(
        ov_model, nncf.Dataset(samples, lambda sample: sample[None]),
        subset_size=len(samples),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE))


def save(ov_model, xml_path):
    """Writes the IR: ``xml_path`` and the ``.bin`` of its weights beside it,
    the weights as they are (OpenVINO would compress float32 ones to float16)."""
    import openvino

    openvino.save_model(ov_model, xml_path, compress_to_fp16=False)


def weights_of(xml_path):
    """The ``.bin`` beside an IR's ``.xml``, which holds its weights."""
    return os.path.splitext(xml_path)[0] + ".bin"


def read(xml_path):
    """The ``openvino.Model`` of the IR at ``xml_path``."""
    import openvino

    return openvino.Core().read_model(xml_path)


def compile(model, precision="f32", num_threads=2):
    """``model`` (an ``openvino.Model`` or an IR's .xml path) compiled for the
    CPU, computing in ``precision`` ("f32"; "bf16" where the CPU has it; an
    int8 IR computes in int8 either way), on ``num_threads`` threads."""
    import openvino

    properties = {openvino.properties.hint.inference_precision: getattr(openvino.Type, precision),
                  openvino.properties.inference_num_threads: num_threads}
    return openvino.Core().compile_model(model, "CPU", properties)


def run(compiled, x):
    """The model's output for ``x``, all samples in one batch. ``x`` is
    copied: the CPU plugin runs on a float32 input's own memory, and may
    write into it."""
    return np.array(compiled(np.array(x, np.float32))[0])


def latency_ms(compiled, batch=1, repeats=30):
    """Median milliseconds of one run on ``batch`` zero samples."""
    shape = compiled.inputs[0].get_partial_shape()
    x = np.zeros((batch, *(dim.get_length() for dim in list(shape)[1:])), np.float32)
    request = compiled.create_infer_request()
    request.infer(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        request.infer(x)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def op_types(ov_model):
    """The IR's distinct operation types, in the graph's order."""
    return list(dict.fromkeys(op.get_type_name() for op in ov_model.get_ordered_ops()))


def runtime_precisions(compiled):
    """``{layer type: runtime precisions}`` of the compiled model's compute
    layers (not its constants, inputs and outputs), as the CPU plugin runs
    them: an int8 IR shows "u8"/"i8" where it computes in int8."""
    found = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        kind = info["layerType"].astype(str)
        if kind not in ("Const", "Input", "Output"):
            found.setdefault(kind, set()).add(info["runtimePrecision"].astype(str))
    return {kind: sorted(precisions) for kind, precisions in found.items()}


def compute_precision(compiled):
    """What the compiled model's computing layers (``COMPUTING``) run in, as
    "/"-joined runtime precisions ("u8/i8" for an int8 IR, "f32")."""
    found = runtime_precisions(compiled)
    return "/".join(sorted({precision for kind in COMPUTING
                            for precision in found.get(kind, ())})) or "none"
