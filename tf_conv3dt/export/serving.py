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

from tf_conv3dt.export import staging
from tf_conv3dt.ops import tuning
from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.signature import SIGNATURE, save_signature, serving_spec
from tf_conv3dt.export.staging import LAST_VERSION

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# Python callbacks cannot run in the model server; neither can custom ops.
SERVER_MISSING_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


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


def write_version(model, path, name, lowering, warmup_batches=(), tuning_batch=None):
    """Writes the SavedModel of one version at ``path`` (not yet served),
    traced under ``lowering`` (a ``signature.ForcedLowering``): signature,
    warmup records, and a check that the model server has every op. Returns
    ``serving_ops(path)``, with ``"selections"``: the (name scope,
    ``ops.select.Selection``) of each call traced, what it runs and why
    (with the ``tuning.Decision`` of each call timed).

    With ``tuning_batch``, each layer that "auto" leaves to choose (its own
    implementation "auto", and ``lowering`` "auto") takes the lowering whose
    forward pass ran fastest on this machine at that batch (``ops.tuning``,
    cached like any tuning); its signature keeps the model's own spatial
    sizes, the ones timed.
    """
    if tuning_batch is not None:
        spec = serving_spec(model)
        with tuning.recording(batch=tuning_batch, serving=True):
            selections = save_signature(model, path, spec, lowering)
    else:
        spec = _traceable_spec(model, lowering)
        selections = save_signature(model, path, spec, lowering)
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
        return staged.publish_version(staged_name, model_dir, version)
    except FileExistsError:
        raise ExportError(f"appeared at {os.path.join(model_dir, str(version))} during "
                          "the export; it is never overwritten", "version", version) from None
    except OverflowError:
        raise ExportError(f"no version is left in {model_dir} after {LAST_VERSION}",
                          "version", version) from None


def _traceable_spec(model, lowering):
    """Dynamic spatial dims where the model traces with them (channels last,
    then channels first) under the lowering it is saved with, and its output
    size follows them, else the model's own shape with a dynamic batch."""
    rank = len(model.inputs[0].shape)
    for fixed_axes in ((rank - 1,), (1,), None):
        spec = serving_spec(model, fixed_axes)
        try:
            with lowering.forced():
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
