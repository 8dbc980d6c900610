"""TFLite conversion of Keras models through the GEMM lowering, and LiteRT runs.

The native op converts to CONV_3D_TRANSPOSE, which TFLite keeps in float32
in every quantized mode and XNNPACK does not delegate. Traced through the
GEMM lowering the same layer becomes FULLY_CONNECTED / RESHAPE / TRANSPOSE /
PAD / SLICE / ADD / CONCATENATION, all of which have int8 kernels.
"""

import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

from tf_conv3dt.export import serving

MODES = ("float32", "float16", "dynamic_range", "int8")


def convert(model, mode, input_shape, calibration=None, implementation="gemm"):
    """Converts ``model`` to a TFLite flatbuffer for a static ``input_shape``.

    Args:
      model: a Keras model with one input.
      mode: one of ``MODES``. "int8" is full-integer: int8 inputs, outputs
        and kernels, calibrated on ``calibration``.
      input_shape: the full static input shape, batch included.
      calibration: array of samples ``(n, *input_shape[1:])`` for "int8".
      implementation: the lowering traced for tf_conv3dt layers.

    Returns:
      The flatbuffer as bytes.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown TFLite mode {mode!r}; expected one of {MODES}.")
    spec = serving.serving_spec(model)
    spec = tf.TensorSpec(input_shape, spec.dtype, name=spec.name)
    with tempfile.TemporaryDirectory() as scratch:
        # Through a SavedModel, as Keras's own LiteRT export does: the
        # converter freezes its variables into constants. int8 sums each
        # stride phase inside one product (int32 accumulation) rather than
        # requantizing after every tap's addition.
        serving.save_signature(model, scratch, spec, implementation,
                               one_product_per_phase=mode == "int8")
        converter = tf.lite.TFLiteConverter.from_saved_model(
            scratch, signature_keys=[serving.SIGNATURE])
        return _convert(converter, mode, input_shape, calibration)


def _convert(converter, mode, input_shape, calibration):
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if calibration is None:
            raise ValueError("mode='int8' needs calibration samples.")
        batch = input_shape[0]
        samples = np.asarray(calibration, np.float32)

        def representative_dataset():
            for start in range(0, len(samples) - batch + 1, batch):
                yield [samples[start:start + batch]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def interpreter(flatbuffer, num_threads=2, delegates=True):
    """A LiteRT interpreter with tensors allocated; XNNPACK is applied unless
    ``delegates`` is False (which keeps the model's own op list visible)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if delegates
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = Interpreter(model_content=flatbuffer, num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
    runner.allocate_tensors()
    return runner


def run(flatbuffer, x, num_threads=2):
    """Runs ``x`` (float) through the model, batch by batch of its static batch
    size, quantizing and dequantizing int8 inputs and outputs."""
    runner = interpreter(flatbuffer, num_threads)
    (inp,), (out,) = runner.get_input_details(), runner.get_output_details()
    batch = inp["shape"][0]
    results = []
    for start in range(0, len(x), batch):
        runner.set_tensor(inp["index"], _quantize(x[start:start + batch], inp))
        runner.invoke()
        results.append(_dequantize(runner.get_tensor(out["index"]), out))
    return np.concatenate(results)


def latency_ms(flatbuffer, num_threads=2, repeats=30):
    """Median milliseconds of one invoke on zeros."""
    runner = interpreter(flatbuffer, num_threads)
    (inp,) = runner.get_input_details()
    runner.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    runner.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def op_list(flatbuffer):
    """``[(op name, [input dtypes], [output dtypes])]`` in execution order."""
    runner = interpreter(flatbuffer, delegates=False)
    dtypes = {t["index"]: np.dtype(t["dtype"]).name for t in runner.get_tensor_details()}
    listed = []
    for op in runner._get_ops_details():  # the only LiteRT API listing ops
        listed.append((
            op["op_name"],
            [dtypes.get(i, "none") for i in op["inputs"] if i >= 0],
            [dtypes.get(i, "none") for i in op["outputs"] if i >= 0],
        ))
    return listed


def _quantize(x, detail):
    if detail["dtype"] == np.float32:
        return np.asarray(x, np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _dequantize(y, detail):
    if detail["dtype"] == np.float32:
        return y
    scale, zero_point = detail["quantization"]
    return (y.astype(np.float32) - zero_point) * scale
