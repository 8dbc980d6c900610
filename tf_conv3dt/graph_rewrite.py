"""Rewrites a frozen GraphDef's native Conv3DTranspose ops into the GEMM lowering, for TFLite.

A graph traced before the converter sees it (the concrete function of a
user's own ``tf.function``) keeps whatever lowering it was traced with; the
native op becomes CONV_3D_TRANSPOSE, which TFLite keeps in float. Once the
converter has frozen such a graph, :func:`native_to_gemm` replaces each op
the native lowering made (``ops.lowerings.native.OP_NAME``, so never
``keras.layers.Conv3DTranspose``'s) by ``ops.conv3d_transpose(...,
implementation="gemm")`` of the same input, kernel, strides, padding and
output size. The graph is imported again once per replaced op, each import
taking the outputs replaced so far, and pruned to its outputs; the
converter's own optimizer merges what the imports repeat.
"""

import tensorflow as tf

from tf_conv3dt.ops.lowerings.native import OP_NAME


def native_ops(graph_def):
    """The names of the nodes the native lowering made in ``graph_def``."""
    return [node.name for node in graph_def.node
            if node.op == "Conv3DBackpropInputV2"
            and node.name.rsplit("/", 1)[-1].startswith(OP_NAME)]


def native_to_gemm(graph_def, input_names, output_names, int8):
    """``graph_def`` with every rewritable native op (:func:`native_ops`;
    NDHWC, no dilation, "SAME" or "VALID": the native lowering's own; and
    output spatial sizes known when frozen) computed by the GEMM lowering, in its int8 form
    ("gemm_int8") for ``int8``; other nodes unchanged. ``input_names`` and
    ``output_names`` are tensor names ("name:0"), kept as they are."""
    from tf_conv3dt import ops

    nodes = {node.name: node for node in graph_def.node}
    targets = [name for name in native_ops(graph_def) if _rewritable(nodes[name])]
    if not targets:
        return graph_def
    targets = _topological(targets, nodes)
    stub = tf.compat.v1.GraphDef()
    stub.CopyFrom(graph_def)
    for node in stub.node:  # each target a placeholder, given its value by input_map
        if node.name in targets:
            dtype = node.attr["T"].type
            node.op = "Placeholder"
            del node.input[:]
            node.attr.clear()
            node.attr["dtype"].type = dtype
    graph = tf.Graph()
    with graph.as_default():
        replaced = {}
        for name in input_names:
            node = nodes[name.split(":")[0]]
            replaced[name] = tf.compat.v1.placeholder(
                tf.dtypes.as_dtype(node.attr["dtype"].type),
                tf.TensorShape(node.attr["shape"].shape), name=node.name)
        for stage, target in enumerate(targets):
            node = nodes[target]
            sizes, kernel, x = tf.graph_util.import_graph_def(
                stub, input_map=dict(replaced),
                return_elements=[name if ":" in name else f"{name}:0" for name in node.input[:3]],
                name=f"tf_conv3dt_stage{stage}")
            spatial = tf.get_static_value(sizes, partial=True)
            strides, padding = node.attr["strides"].list.i, node.attr["padding"].s.decode()
            if spatial is None or None in spatial[1:4]:  # sizes known only at run time
                replaced[f"{target}:0"] = tf.nn.conv3d_transpose(
                    x, kernel, sizes, strides, padding, name=f"{target}_kept")
                continue
            replaced[f"{target}:0"] = ops.conv3d_transpose(
                x, kernel, tuple(strides[1:4]), padding.lower(),
                output_shape=tuple(int(length) for length in spatial[1:4]),
                implementation="gemm_int8" if int8 else "gemm")
        outputs = tf.graph_util.import_graph_def(
            stub, input_map=dict(replaced), return_elements=list(output_names),
            name="tf_conv3dt_final")
        for name, tensor in zip(output_names, outputs):
            tf.identity(tensor, name=name.split(":")[0])
    return tf.compat.v1.graph_util.extract_sub_graph(
        graph.as_graph_def(), [name.split(":")[0] for name in output_names])


def _rewritable(node):
    return (node.attr["data_format"].s in (b"", b"NDHWC")
            and list(node.attr["dilations"].list.i) in ([], [1, 1, 1, 1, 1])
            and node.attr["padding"].s in (b"SAME", b"VALID"))


def _topological(targets, nodes):
    """``targets`` ordered so that none comes before one it depends on."""
    def ancestors(name):
        seen, stack = set(), [name]
        while stack:
            for source in nodes[stack.pop()].input:
                source = source.lstrip("^").split(":")[0]
                if source not in seen:
                    seen.add(source)
                    stack.append(source)
        return seen

    upstream = {target: ancestors(target) for target in targets}
    return sorted(targets, key=lambda target: sum(other in upstream[target]
                                                   for other in targets))
