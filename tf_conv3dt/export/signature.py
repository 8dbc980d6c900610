"""The serving_default signature the files are traced with, and the lowering forced while they are."""

import inspect
from typing import NamedTuple

import tensorflow as tf

from tf_conv3dt import ops
from tf_conv3dt.ops import select, tuning
from tf_conv3dt._keras import keras

SIGNATURE = "serving_default"


class ForcedLowering(NamedTuple):
    """What ``ops.forced_implementation`` forces while a file is traced: a
    lowering's name, "auto" to let each call choose, or a rule of its own
    (``{kernel relation: lowering's name}``, what a runtime measured fastest
    for each); with ``depthwise_as_gemm``, depthwise layers run GEMM's one
    call instead."""

    name: object
    depthwise_as_gemm: bool = False

    def forced(self):
        """The ``ops.forced_implementation`` context of this lowering."""
        return ops.forced_implementation(self.name, depthwise_as_gemm=self.depthwise_as_gemm)

    def describe(self):
        """Its name, and what depthwise layers run where that differs."""
        return str(self) + (" (depthwise layers: gemm's one call)" if self.depthwise_as_gemm
                            else "")

    def __str__(self):
        if isinstance(self.name, dict):
            return ", ".join(f"{name} where {relation}" for relation, name in self.name.items())
        return self.name


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


def serving_function(model, lowering):
    """The signature's Python function: ``x -> {output_name(model): output}``,
    traced under ``lowering`` (a :class:`ForcedLowering`), with timing off: a
    file's "auto" is the rule's, for the CPU it will serve on cannot be timed
    here (a tuned SavedModel, under ``tuning.recording``, times regardless)."""
    key = output_name(model)

    def serve(x):
        with tuning.switched(False), lowering.forced():
            return {key: model(x, training=False)}

    return serve


def save_signature(model, path, spec, lowering):
    """Writes ``model`` as a SavedModel whose one signature, serving_default,
    takes ``spec`` and returns ``serving_function``'s output. Returns the
    ``(name scope, ops.select.Selection)`` of each call its trace made: what
    each runs, and why."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    endpoint = archive.add_endpoint(SIGNATURE, serving_function(model, lowering),
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
