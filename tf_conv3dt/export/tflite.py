"""TFLite conversion of Keras models under a forced lowering, and LiteRT runs.

The lowering decides what the converter sees. The native op converts to
CONV_3D_TRANSPOSE, which TFLite keeps in float32 in every quantized mode and
XNNPACK does not delegate. Traced through the GEMM lowering the same layer
becomes FULLY_CONNECTED / RESHAPE / TRANSPOSE / PAD / SLICE / ADD /
CONCATENATION, all of which have int8 kernels: what the export's TFLite
files take (``formats.tflite``).
"""

import os
import shutil
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf

from tf_conv3dt.export import signature

# float16: float16 weights; dynamic_range: int8 weights, float activations;
# int8: full-integer, int8 inputs, outputs, kernels and activations.
MODES = ("float32", "float16", "dynamic_range", "int8")


def convert(model, mode, input_shape, lowering, calibration=None, scratch_dir=None):
    """Converts ``model`` to a TFLite flatbuffer for a static ``input_shape``.

    Args:
      model: a Keras model with one input.
      mode: one of ``MODES``. "int8" is full-integer: int8 inputs, outputs
        and kernels, calibrated on ``calibration``.
      input_shape: the full input shape, batch included: a static batch, or
        None for a file that takes any batch (shape signature -1, resized
        with ``interpreter.resize_tensor_input``; int8 is then calibrated one
        sample at a time).
      lowering: the ``signature.ForcedLowering`` its layers are traced with.
      calibration: array of samples ``(n, *input_shape[1:])`` for "int8".
      scratch_dir: where the intermediate SavedModel's temporary directory
        goes (None: the system's).

    Returns:
      The flatbuffer as bytes.
    """
    (flatbuffer,) = (flatbuffer for _, flatbuffer in convert_each(
        model, {mode: lowering}, input_shape, calibration, scratch_dir))
    return flatbuffer


def convert_each(model, lowerings, input_shape, calibration=None, scratch_dir=None):
    """Yields ``(mode, flatbuffer)`` for each mode of ``lowerings`` (``{mode:
    signature.ForcedLowering}``) in turn, as :func:`convert` gives them,
    tracing and saving the model once for each run of modes with one
    lowering rather than once per file."""
    unknown = [mode for mode in lowerings if mode not in MODES]
    if unknown:
        raise ValueError(f"Unknown TFLite mode {unknown[0]!r}; expected one of {MODES}.")
    spec = signature.serving_spec(model)
    spec = tf.TensorSpec(input_shape, spec.dtype, name=spec.name)
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        saved = None  # (lowering, path): the SavedModel the last file came from
        for mode, lowering in lowerings.items():
            # Through a SavedModel, as Keras's own LiteRT export does: the
            # converter freezes its variables into constants.
            if saved is None or saved[0] != lowering:
                if saved is not None:  # one at a time on the disk, as each file needs it
                    shutil.rmtree(saved[1])
                saved = lowering, os.path.join(scratch, mode)
                signature.save_signature(model, saved[1], spec, lowering)
            converter = tf.lite.TFLiteConverter.from_saved_model(
                saved[1], signature_keys=[signature.SIGNATURE])
            yield mode, _convert(converter, mode, input_shape, calibration)


def _convert(converter, mode, input_shape, calibration):
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if calibration is None:
            raise ValueError("mode='int8' needs calibration samples.")
        samples = np.asarray(calibration, np.float32)

        def representative_dataset():
            for batch in full_batches(samples, input_shape[0] or 1):
                yield [batch]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def interpreter(flatbuffer, num_threads=2, delegates=True, batch=None):
    """A LiteRT interpreter with tensors allocated; XNNPACK is applied unless
    ``delegates`` is False (which keeps the model's own op list visible). A
    file with a dynamic batch is resized to ``batch`` (None: its default, 1)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.AUTO if delegates
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = Interpreter(model_content=flatbuffer, num_threads=num_threads,
                         experimental_op_resolver_type=resolver)
    (inp,) = runner.get_input_details()
    if batch is not None and inp["shape_signature"][0] == -1:
        runner.resize_tensor_input(inp["index"], [batch, *inp["shape"][1:]])
    runner.allocate_tensors()
    return runner


def full_batches(x, batch):
    """``x`` in batches of exactly ``batch`` samples, the last one completed
    with samples from the start (cycling when ``x`` has fewer than ``batch``)."""
    return [np.take(x, range(start, start + batch), axis=0, mode="wrap")
            for start in range(0, len(x), batch)]


def run(flatbuffer, x, num_threads=2, batch=None):
    """Runs ``x`` (float) through the model, batch by batch of its static batch
    size, or of ``batch`` for a dynamic-batch file (a last partial batch
    completed, its extra outputs dropped), quantizing and dequantizing int8
    inputs and outputs."""
    runner = interpreter(flatbuffer, num_threads, batch=batch)
    (inp,), (out,) = runner.get_input_details(), runner.get_output_details()
    results = []
    for batch in full_batches(x, inp["shape"][0]):
        runner.set_tensor(inp["index"], _quantize(batch, inp))
        runner.invoke()
        results.append(_dequantize(runner.get_tensor(out["index"]), out))
    return np.concatenate(results)[:len(x)]


def latency_ms(flatbuffer, num_threads=2, repeats=30, batch=None):
    """Median milliseconds of one invoke on zeros (of ``batch`` samples for a
    dynamic-batch file)."""
    runner = interpreter(flatbuffer, num_threads, batch=batch)
    (inp,) = runner.get_input_details()
    runner.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    runner.invoke()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def output_range(flatbuffer):
    """``[low, high]``: the real values an integer output can represent (its
    scale and zero point at the dtype's limits); None for a float output."""
    (out,) = interpreter(flatbuffer, delegates=False).get_output_details()
    if out["dtype"] == np.float32:
        return None
    info = np.iinfo(out["dtype"])
    return [float(_dequantize(np.array(v, out["dtype"]), out)) for v in (info.min, info.max)]


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
