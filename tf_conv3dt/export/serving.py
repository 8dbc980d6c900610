"""SavedModels for TF Serving: versioned, written atomically, with warmup records.

TF Serving watches ``<base>/<name>/<integer version>/`` and loads a version as
soon as its directory appears, so a version is written in a staging directory
(``staging.Staging``, a name the server ignores) and renamed into place only
once complete and checked. An existing version is never touched.
"""

import os
import re

import numpy as np
import tensorflow as tf

from tf_conv3dt import ops
from tf_conv3dt.export import staging
from tf_conv3dt.ops import tuning
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.signature import SIGNATURE, lowering, save_signature, serving_spec

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# Python callbacks cannot run in the model server; neither can custom ops.
SERVER_MISSING_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
# TF Serving's ModelSpec addresses versions as int64.
LAST_VERSION = 2**63 - 1


def check_model_name(name):
    if not isinstance(name, str) or not _MODEL_NAME.match(name) or ".." in name:
        raise ExportError(
            "must be 1 to 200 letters, digits, '_', '-' or '.', starting with a letter or "
            "digit, without '..' (it becomes a directory name)", "name", name)
    return name


def check_version(version):
    """None (the next free version) or an int TF Serving can address."""
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or not 1 <= version <= LAST_VERSION):
        raise ExportError(f"must be an integer from 1 to {LAST_VERSION} (TF Serving's "
                          "int64 versions), or None for the next free one", "version", version)
    return version


def check_version_free(model_dir, version):
    """Refuses a ``version`` present under ``model_dir``, and a next version
    beyond ``LAST_VERSION``."""
    final = os.path.join(model_dir, str(version))
    if version is not None and os.path.lexists(final):
        raise ExportError(f"already exists at {final}; a version is never overwritten "
                          "(choose another or let the export take the next one)",
                          "version", version)
    if version is None and (staging.versions(model_dir) or [0])[-1] == LAST_VERSION:
        raise ExportError(f"{model_dir} already holds the last version TF Serving addresses, "
                          f"{LAST_VERSION}; give an unused version explicitly",
                          "version", version)


def write_serving_version(model, base_dir, name, version=None, warmup_batches=(),
                          implementation=None):
    """Writes ``model`` as ``<base_dir>/<name>/<version>/`` and returns the path.

    Args:
      model: a Keras model with one input and one output.
      base_dir: the directory TF Serving's ``--model_base_path`` points above.
      name: the model name (a directory name).
      version: an integer, refused if present; None takes the next integer.
      warmup_batches: input arrays written as PredictionLog warmup records.
      implementation: the lowering traced for tf_conv3dt layers (None: the
        SavedModel's default, ``signature.DEFAULT_LOWERINGS``, with depthwise
        layers as GEMM's one call), or "tuned" as :func:`write_version`
        takes it.

    Raises:
      ExportError: a bad name or version, an existing version, or a graph
        that uses ops the model server does not have. Nothing is left under
        a numeric name.
    """
    model_dir = os.path.join(base_dir, check_model_name(name))
    check_version_free(model_dir, check_version(version))
    os.makedirs(model_dir, exist_ok=True)
    with staging.Staging(model_dir) as staged:
        write_version(model, staged.path_of("version"), name, warmup_batches, implementation)
        return publish_version(staged, "version", model_dir, version)


def write_version(model, path, name, warmup_batches=(), implementation=None,
                  tuning_batch=1):
    """Writes the SavedModel of one version at ``path`` (not yet served):
    signature, warmup records, and a check that the model server has every
    op. Returns ``serving_ops(path)``, with ``"selections"``: the (name
    scope, ``ops.select.Selection``) of each call traced, what it runs and
    why (with the ``tuning.Decision`` of each call "tuned" timed).

    ``implementation="tuned"`` gives each layer whose own implementation is
    "auto" the lowering whose forward pass ran fastest on this machine at
    batch ``tuning_batch`` (``ops.tuning``, cached like any tuning); its
    signature keeps the model's own spatial sizes, the ones timed. None
    takes the SavedModel's default (``signature.DEFAULT_LOWERINGS``), with
    depthwise layers as GEMM's one call.
    """
    depthwise_as_gemm = implementation is None
    implementation = lowering(implementation, "savedmodel")
    if implementation == "tuned":
        spec = serving_spec(model)
        with tuning.recording(batch=tuning_batch, serving=True):
            selections = save_signature(model, path, spec, "auto")
    else:
        spec = _traceable_spec(model, implementation, depthwise_as_gemm)
        selections = save_signature(model, path, spec, implementation,
                                    depthwise_as_gemm=depthwise_as_gemm)
    found = dict(serving_ops(path), selections=selections)
    if found["missing_in_server"]:
        raise ExportError("The SavedModel uses ops TF Serving's model server does not have: "
                          + ", ".join(found["missing_in_server"]))
    if warmup_batches:
        write_warmup_requests(path, name, spec.name, warmup_batches)
    return found


def publish_version(staged, staged_name, model_dir, version):
    """Publishes a staged version directory (``staging.Staging.publish_version``),
    with the user's errors as ExportError."""
    try:
        return staged.publish_version(staged_name, model_dir, version, LAST_VERSION)
    except FileExistsError:
        raise ExportError(f"appeared at {os.path.join(model_dir, str(version))} during "
                          "the export; it is never overwritten", "version", version) from None
    except OverflowError:
        raise ExportError(f"no version is left in {model_dir} after {LAST_VERSION}",
                          "version", version) from None


def _traceable_spec(model, implementation, depthwise_as_gemm=False):
    """Dynamic spatial dims where the model traces with them (channels last,
    then channels first) under the lowering it is saved with, and its output
    size follows them, else the model's own shape with a dynamic batch."""
    rank = len(model.inputs[0].shape)
    for fixed_axes in ((rank - 1,), (1,), None):
        spec = serving_spec(model, fixed_axes)
        try:
            with ops.forced_implementation(implementation,
                                           depthwise_as_gemm=depthwise_as_gemm):
                traced = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        except (ValueError, TypeError) as error:  # what shape checks raise while tracing
            failure = error
            continue
        if fixed_axes is not None and _output_size_is_fixed(traced, rank, fixed_axes):
            return serving_spec(model)
        return spec
    raise ExportError(f"The model cannot be traced with input {spec}: "
                      f"{type(failure).__name__}: {str(failure).splitlines()[0]}") from failure


def _output_size_is_fixed(traced, rank, fixed_axes):
    """Whether every output axis that the input's dynamic axes would size is
    static: a model asking for fixed sizes (``output_shape=``) traces with
    any input size but computes only with its own (its skips would not
    concatenate), so a signature taking any size would promise too much."""
    outputs = tf.nest.flatten(traced.structured_outputs)
    free = [axis for axis in range(1, rank) if axis not in fixed_axes]
    return all(output.shape.rank == rank and all(output.shape[axis] is not None for axis in free)
               for output in outputs)


def serving_ops(saved_model_dir):
    """The op types in a SavedModel's graphs, and those the server lacks."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    found, functions = set(), set()
    for meta_graph in proto.meta_graphs:
        library = meta_graph.graph_def.library
        functions |= {function.signature.name for function in library.function}
        found |= {node.op for node in meta_graph.graph_def.node}
        for function in library.function:
            found |= {node.op for node in function.node_def}
    found -= functions
    missing = sorted(op for op in found
                     if op in SERVER_MISSING_OPS or op_def_registry.get(op) is None)
    return {"ops": sorted(found), "missing_in_server": missing}


def write_warmup_requests(saved_model_dir, model_name, input_key, batches):
    """``assets.extra/tf_serving_warmup_requests``: one PredictionLog per batch."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for batch in batches:
            request = predict_request(model_name, input_key, np.asarray(batch))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(saved_model_dir):
    """The PredictRequests of a version's warmup file."""
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(os.path.join(saved_model_dir, WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        requests.append(log.predict_log.request)
    return requests


def predict_request(model_name, input_key, array=None, shape=None, dtype=tf.float32):
    """A gRPC PredictRequest for the serving_default signature; without
    ``array`` it carries only dtype and shape (a template)."""
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    if array is not None:
        request.inputs[input_key].CopyFrom(tf.make_tensor_proto(array))
    else:
        tensor = request.inputs[input_key]
        tensor.dtype = tf.as_dtype(dtype).as_datatype_enum
        for dim in shape:
            tensor.tensor_shape.dim.add(size=-1 if dim is None else dim)
    return request


def request_examples(saved_model_dir, model_name):
    """The REST body and gRPC request TF Serving accepts for this signature."""
    from google.protobuf import text_format

    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures[SIGNATURE]
    (key, spec), = signature.structured_input_signature[1].items()
    (out_key, out_spec), = signature.structured_outputs.items()
    per_example = [("n" if d is None else d) for d in spec.shape[1:]]
    rest = (
        f"POST http://HOST:8501/v1/models/{model_name}:predict\n"
        f'{{"signature_name": "{SIGNATURE}", "instances": '
        f'[{{"{key}": <{spec.dtype.name} nested list, shape {per_example}>}}, ...]}}\n'
        f'-> {{"predictions": [<{out_spec.dtype.name} shape '
        f'{[("n" if d is None else d) for d in out_spec.shape[1:]]}>, ...]}}'
    )
    template = predict_request(model_name, key, shape=[1, *spec.shape[1:]], dtype=spec.dtype)
    grpc = (
        "tensorflow.serving.PredictionService/Predict, PredictRequest:\n"
        + text_format.MessageToString(template)
        + f"  (values: tf.make_tensor_proto(x) fills inputs[\"{key}\"]; "
        f"-1 is any size; response outputs[\"{out_key}\"])"
    )
    return {"input": key, "output": out_key, "rest": rest, "grpc": grpc}
