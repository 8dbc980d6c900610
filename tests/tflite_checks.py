"""What "integer-only TFLite" means in these tests, asserted in one place."""


def compute_ops(flatbuffer, float_boundary=False):
    """``(name, input dtypes, output dtypes)`` of the ops that compute: not a
    dynamic batch's shape arithmetic (SHAPE, and ops on int32 alone), and with
    ``float_boundary`` (a file that takes and gives float32, the default of a
    user's own converter) not its boundary QUANTIZE and DEQUANTIZE."""
    from tf_conv3dt.export import tflite  # the export extra, imported where it is used

    skipped = {"SHAPE"} | ({"QUANTIZE", "DEQUANTIZE"} if float_boundary else set())
    return [(name, inputs, outputs) for name, inputs, outputs in tflite.op_list(flatbuffer)
            if name not in skipped and set(inputs) | set(outputs) != {"int32"}]


def assert_integer_tflite(flatbuffer, float_boundary=False, exclude=()):
    """Every op that computes (:func:`compute_ops`) takes and gives int8
    tensors (int32 shape and index operands aside), and none is
    CONV_3D_TRANSPOSE. ``exclude``: op names left out, e.g. another layer's
    op that TFLite keeps in float."""
    ops = [op for op in compute_ops(flatbuffer, float_boundary) if op[0] not in exclude]
    assert ops, "no op computes"
    for name, inputs, outputs in ops:
        assert {d for d in inputs if d != "int32"} == {"int8"}, (name, inputs)
        assert set(outputs) == {"int8"}, (name, outputs)
    assert "CONV_3D_TRANSPOSE" not in {name for name, _, _ in ops}
