"""ONNX conversion of Keras models through tf2onnx, and ONNX Runtime runs.

The file holds the serving signature: its input and output carry the
model's names, the batch axis is the symbolic ``batch`` (any batch), the
other axes are the model input's. The GEMM lowering becomes MatMul /
Reshape / Transpose nodes, which ONNX Runtime's CPU provider runs faster
than the native op's one ConvTranspose node (benchmarks/bench_onnx.py);
traced with the native op, it holds that node instead. Needs the ``onnx``
extra (tf2onnx, onnx, onnxruntime), imported on first use.
"""

import time

import numpy as np
import tensorflow as tf

from tf_conv3dt.export import signature

# ONNX Runtime 1.13+, TensorRT 8.6+ and OpenVINO read this opset.
OPSET = 17
BATCH_AXIS = "batch"


def convert(model, lowering):
    """The ONNX model (serialized bytes) of ``model``'s serving signature,
    traced under ``lowering`` (a ``signature.ForcedLowering``)."""
    import tf2onnx

    spec = signature.serving_spec(model)
    serve = tf.function(signature.serving_function(model, lowering), input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = BATCH_AXIS
    return proto.SerializeToString()


def session(model_bytes, num_threads=2):
    """An ONNX Runtime CPU session, with ``num_threads`` threads in each op
    (as LiteRT gets in tflite.run)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings go to the C++ log
    return onnxruntime.InferenceSession(model_bytes, options,
                                        providers=["CPUExecutionProvider"])


def run(model_bytes, x, num_threads=2):
    """The model's output for ``x``, all samples in one batch."""
    runner = session(model_bytes, num_threads)
    (inp,) = runner.get_inputs()
    (output,) = runner.run(None, {inp.name: np.asarray(x, np.float32)})
    return output


def latency_ms(model_bytes, batch=1, num_threads=2, repeats=30):
    """Median milliseconds of one run on ``batch`` zero samples."""
    runner = session(model_bytes, num_threads)
    (inp,) = runner.get_inputs()
    feed = {inp.name: np.zeros((batch, *inp.shape[1:]), np.float32)}
    runner.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.run(None, feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def node_types(model_bytes):
    """The graph's distinct node types, in first-use order."""
    import onnx

    seen = []
    for node in onnx.load_model_from_string(model_bytes).graph.node:
        if node.op_type not in seen:
            seen.append(node.op_type)
    return seen
