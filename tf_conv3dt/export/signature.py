"""The serving_default signature that the SavedModel, TFLite and ONNX files are traced with."""

import inspect

import tensorflow as tf

from tf_conv3dt import ops
from tf_conv3dt.ops import select, tuning
from tf_conv3dt._keras import keras

SIGNATURE = "serving_default"
# What each artifact traces when no implementation is asked for:
# - the SavedModel: the lowering whose serving forward was least slow, at
#   worst, against the fastest one on every CPU kind measured
#   (benchmarks/bench_serving.py; docs/performance.md), since the export
#   cannot see the CPU that will serve it; its depthwise layers take GEMM's
#   one call (forced_implementation's depthwise_as_gemm), the fastest
#   forward on each CPU kind (benchmarks/bench_groups.py), where the
#   sub-pixel lowering would run one call per channel;
# - TFLite: GEMM, integer end to end (FULLY_CONNECTED), ~5x the float
#   CONV_3D_TRANSPOSE in LiteRT;
# - ONNX: GEMM's MatMuls, faster than ConvTranspose in ONNX Runtime
#   (benchmarks/bench_onnx.py).
DEFAULT_LOWERINGS = {"savedmodel": "subpixel", "tflite": "gemm", "onnx": "gemm"}


def lowering(implementation, artifact):
    """The lowering ``artifact`` ("savedmodel", "tflite" or "onnx") is traced
    with when asked for ``implementation`` (None: its default; "tuned", which
    times TensorFlow's forward, chooses for the SavedModel alone)."""
    if implementation is None or (implementation == "tuned" and artifact != "savedmodel"):
        return DEFAULT_LOWERINGS[artifact]
    return implementation


def serving_spec(model, fixed_axes=None):
    """The signature's input: the model input's name and dtype, a dynamic
    batch, and every other axis dynamic unless in ``fixed_axes`` (None keeps
    them all as the model declares them)."""
    keras_input = model.inputs[0]
    shape = [None] + list(keras_input.shape[1:])
    if fixed_axes is not None:
        shape = [dim if axis in fixed_axes else None for axis, dim in enumerate(shape)]
    return tf.TensorSpec(shape, keras_input.dtype, name=_input_name(model))


def output_name(model):
    return model.layers[-1].name


def serving_function(model, implementation, depthwise_as_gemm=False):
    """The signature's Python function: ``x -> {output_name(model): output}``,
    traced under ``ops.forced_implementation(implementation,
    depthwise_as_gemm=depthwise_as_gemm)``, with timing off: a file's
    "auto" is the rule's, for the CPU it will serve on cannot be timed here
    ("tuned", under ``tuning.recording``, times regardless)."""
    key = output_name(model)

    def serve(x):
        with tuning.switched(False), ops.forced_implementation(
                implementation, depthwise_as_gemm=depthwise_as_gemm):
            return {key: model(x, training=False)}

    return serve


def save_signature(model, path, spec, implementation, depthwise_as_gemm=False):
    """Writes ``model`` as a SavedModel whose one signature, serving_default,
    takes ``spec`` and returns ``serving_function``'s output. Returns the
    ``(name scope, ops.select.Selection)`` of each call its trace made: what
    each runs, and why."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    endpoint = archive.add_endpoint(SIGNATURE, serving_function(model, implementation,
                                                                depthwise_as_gemm),
                                    input_signature=[spec])
    if endpoint is None:  # tf_keras returns none; it sets it on the archive
        endpoint = getattr(archive, SIGNATURE)
    with select.recorded() as selections:  # the trace write_out saves
        endpoint.get_concrete_function()
    takes_verbose = "verbose" in inspect.signature(archive.write_out).parameters
    quiet = {"verbose": False} if takes_verbose else {}
    archive.write_out(path, **quiet)
    return selections


def _input_name(model):
    names = getattr(model, "input_names", None)  # tf_keras
    if names:
        return names[0]
    return model.inputs[0].name.split(":")[0]  # Keras 3 KerasTensor
