"""The hook on TFLite's converters: a model holding Conv3DTranspose converts through GEMM.

The native op converts to CONV_3D_TRANSPOSE, which TFLite keeps in float in
every quantized mode; the GEMM lowering converts to FULLY_CONNECTED (a
depthwise layer's float forms to MUL) and data movement, which have integer
kernels. So while one of these converts a model
that holds a Conv3DTranspose, every transposed convolution it traces takes
the GEMM lowering (:func:`tf_conv3dt.forced_implementation`):

* ``tf.lite.TFLiteConverter.from_keras_model(model).convert()``, under
  either Keras flavour;
* Keras 3's ``model.export(path, format="litert", ...)``.

Given a representative dataset (a full-integer file), each stride phase's
taps are summed in one product (GEMM's int8 form, "gemm_int8": one int32
accumulation per output); float, float16 and dynamic-range files take one
product per tap. A ``forced_implementation`` the caller holds wins.

``from_concrete_functions`` takes a graph traced before the converter sees
it: where that graph holds the native lowering's ops, the frozen graph is
rewritten, each of them computed by the GEMM lowering instead
(``graph_rewrite``), in the same form.

Nothing else changes: other models, and every other call, run unwrapped.
``from_saved_model`` reads a graph from disk as it was saved; trace that
inside ``forced_implementation``. ``TF_CONV3DT_TFLITE_HOOK=0`` (read at each
conversion) switches the hook off.
"""

import os

import wrapt

from tf_conv3dt.ops import select

ENV_SWITCH = "TF_CONV3DT_TFLITE_HOOK"


def install():
    """Wraps the converters' entry points when (and if) their modules are
    imported; importing tf_conv3dt imports neither."""
    wrapt.register_post_import_hook(_wrap_tflite, "tensorflow.lite.python.lite")
    wrapt.register_post_import_hook(_wrap_litert_export, "keras.src.export.litert")


def _wrap_tflite(module):
    wrapt.wrap_function_wrapper(module, "TFLiteKerasModelConverterV2.convert",
                                _keras_model_converter_convert)
    wrapt.wrap_function_wrapper(module, "TFLiteFrozenGraphConverterV2.convert",
                                _concrete_functions_converter_convert)


def _wrap_litert_export(module):
    wrapt.wrap_function_wrapper(module, "LiteRTExporter.export", _litert_exporter_export)


def _keras_model_converter_convert(convert, converter, args, kwargs):
    return _through_gemm(converter._keras_model, converter.representative_dataset is not None,
                        convert, *args, **kwargs)


def _litert_exporter_export(export, exporter, args, kwargs):
    return _through_gemm(exporter.model,
                        exporter.kwargs.get("representative_dataset") is not None,
                        export, *args, **kwargs)


def _concrete_functions_converter_convert(convert, converter, args, kwargs):
    """``from_concrete_functions``' conversion, its frozen graph rewritten
    (``graph_rewrite.native_to_gemm``) where it holds the native lowering's
    ops and the switch is on. The rewrite needs the frozen-graph path, not
    the one through a SavedModel the converter takes given a trackable."""
    from tf_conv3dt import graph_rewrite

    if os.environ.get(ENV_SWITCH, "1") == "0" or not any(
            graph_rewrite.native_ops(function.graph.as_graph_def())
            for function in converter._funcs):
        return convert(*args, **kwargs)
    freeze = converter._freeze_concrete_function
    full_integer = converter.representative_dataset is not None

    def rewritten_freeze():
        graph_def, inputs, outputs, frozen = freeze()
        graph_def = graph_rewrite.native_to_gemm(
            graph_def, [t.name for t in inputs], [t.name for t in outputs], full_integer)
        return graph_def, inputs, outputs, frozen

    through_saved_model = converter.experimental_lower_to_saved_model
    converter._freeze_concrete_function = rewritten_freeze
    converter.experimental_lower_to_saved_model = False
    try:
        return convert(*args, **kwargs)
    finally:
        del converter._freeze_concrete_function
        converter.experimental_lower_to_saved_model = through_saved_model


def _through_gemm(model, full_integer, function, *args, **kwargs):
    """``function(*args, **kwargs)``, inside ``forced_implementation`` of
    "gemm", or for a full-integer file "gemm_int8", where ``model`` holds a Conv3DTranspose, the switch is on and the caller
    forces no lowering itself."""
    from tf_conv3dt.layer import Conv3DTranspose  # the layer imports this package

    if (os.environ.get(ENV_SWITCH, "1") == "0" or select.forced() is not None
            or not any(isinstance(layer, Conv3DTranspose)
                       for layer in model._flatten_layers(include_self=True))):
        return function(*args, **kwargs)
    with select.forced_implementation("gemm_int8" if full_integer else "gemm"):
        return function(*args, **kwargs)
