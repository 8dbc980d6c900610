"""What "integer-only TFLite" means in these tests, asserted in one place."""


def compute_ops(flatbuffer, float_boundary=False, shape_arithmetic=False):
    """``(name, input dtypes, output dtypes)`` of the file's ops, without
    those that move none of the model's data where the file may have them:
    with ``float_boundary`` (a file that takes and gives float32, a user's own
    converter's default) its boundary QUANTIZE and DEQUANTIZE; with
    ``shape_arithmetic`` (a dynamic batch) SHAPE and the ops on int32 alone."""
    from tf_conv3dt.export import tflite  # the export extra, imported where it is used

    skipped = ({"QUANTIZE", "DEQUANTIZE"} if float_boundary else set()) | (
        {"SHAPE"} if shape_arithmetic else set())
    return [(name, inputs, outputs) for name, inputs, outputs in tflite.op_list(flatbuffer)
            if name not in skipped
            and not (shape_arithmetic and set(inputs) | set(outputs) == {"int32"})]


def assert_integer_tflite(flatbuffer, float_boundary=False, shape_arithmetic=False,
                          exclude=()):
    """Every op (:func:`compute_ops`, but those named in ``exclude``: another
    layer's op that TFLite keeps in float, say) takes and gives int8 tensors,
    int32 shape and index operands aside, and none is CONV_3D_TRANSPOSE."""
    ops = [op for op in compute_ops(flatbuffer, float_boundary, shape_arithmetic)
           if op[0] not in exclude]
    assert ops, "the file has no op to check"
    for name, inputs, outputs in ops:
        assert {d for d in inputs if d != "int32"} == {"int8"}, (name, inputs)
        assert set(outputs) == {"int8"}, (name, outputs)
    assert "CONV_3D_TRANSPOSE" not in {name for name, _, _ in ops}
