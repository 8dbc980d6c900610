"""The user's own TFLite flows (tflite_hook.py): GEMM files in every converter mode."""

import numpy as np
import pytest
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt import tflite_hook
from tf_conv3dt._keras import LEGACY_KERAS, keras
from tf_conv3dt.ops import select
from markers import smoke
from tflite_checks import assert_integer_tflite, compute_ops


def _model():
    """Two layers, each asking for the native op: only the hook keeps
    CONV_3D_TRANSPOSE out of the file."""
    inputs = keras.Input((4, 3, 5, 6), name="voxels")
    hidden = tf_conv3dt.Conv3DTranspose(4, 3, 2, padding="same", activation="relu",
                                        implementation="native", name="up1")(inputs)
    outputs = tf_conv3dt.Conv3DTranspose(2, 2, 2, implementation="native", name="up2")(hidden)
    return keras.Model(inputs, outputs)


def _samples(count=8):
    return np.random.default_rng(7).uniform(size=(count, 4, 3, 5, 6)).astype("float32")


def _options(mode, x):
    """The converter settings of each mode, as TFLite's guide gives them."""
    options = {}
    if mode != "float32":
        options["optimizations"] = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        options["target_spec"] = {"supported_types": [tf.float16]}
    if mode == "int8":
        options["representative_dataset"] = lambda: ([x[i:i + 1]] for i in range(len(x)))
    return options


def _converted(converter, mode, x):
    """``converter``'s file with ``mode``'s settings (:func:`_options`)."""
    for name, value in _options(mode, x).items():
        if name == "target_spec":
            converter.target_spec.supported_types = value["supported_types"]
        else:
            setattr(converter, name, value)
    return converter.convert()


def _users_converter(model, mode, x):
    return _converted(tf.lite.TFLiteConverter.from_keras_model(model), mode, x)


def _names(flatbuffer):
    return {name for name, _, _ in compute_ops(flatbuffer, float_boundary=True,
                                               shape_arithmetic=True)}


# The largest error each mode may have, relative to the float model's output
# range (int8: its quantization; float16 and dynamic range: their weights).
TOLERANCE = {"float32": 1e-5, "float16": 1e-2, "dynamic_range": 2e-2, "int8": 2e-2}


def _check(flatbuffer, mode, model, x):
    from tf_conv3dt.export import tflite  # the export extra, imported where it is used

    names = _names(flatbuffer)
    assert "FULLY_CONNECTED" in names and "CONV_3D_TRANSPOSE" not in names, (mode, names)
    if mode == "int8":
        assert_integer_tflite(flatbuffer, float_boundary=True, shape_arithmetic=True)
    expected = np.asarray(model(x))
    error = np.abs(tflite.run(flatbuffer, x) - expected).max()
    assert error <= TOLERANCE[mode] * (expected.max() - expected.min()), (mode, error)


# The oldest-TensorFlow job converts the two ends: float32 and full int8.
@pytest.mark.parametrize("mode", [mode if mode in ("float16", "dynamic_range")
                                  else pytest.param(mode, marks=smoke) for mode in TOLERANCE])
def test_users_converter_gives_gemm_files(mode):
    """TFLiteConverter.from_keras_model and the guide's settings, nothing else:
    FULLY_CONNECTED-based files close to the model, the int8 one integer end
    to end."""
    model, x = _model(), _samples()
    _check(_users_converter(model, mode, x), mode, model, x)
    assert select.forced() is None  # nothing stays forced after the conversion


def _concrete_function_converter(model, mode, x, trackable):
    """The guide's from_concrete_functions flow: the user's own tf.function,
    traced before the converter sees it (here with the native op)."""
    @tf.function(input_signature=[tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)])
    def serve(volumes):
        return model(volumes)

    return _converted(tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], model if trackable else None), mode, x)


@pytest.mark.parametrize("trackable", [False, True], ids=["function-only", "with-trackable"])
@pytest.mark.parametrize("mode", [mode if mode in ("float16", "dynamic_range")
                                  else pytest.param(mode, marks=smoke) for mode in TOLERANCE])
def test_users_concrete_function_converts_through_gemm(mode, trackable):
    """A concrete function traced with the native op, given to
    from_concrete_functions with or without its model: the frozen graph is
    rewritten, so the files are FULLY_CONNECTED-based and close to the
    model, the int8 one integer end to end."""
    model, x = _model(), _samples()
    _check(_concrete_function_converter(model, mode, x, trackable), mode, model, x)


def test_a_concrete_function_of_keras_own_layer_or_switched_off_keeps_its_op(monkeypatch):
    """Only the native lowering's own ops are rewritten: Keras's
    Conv3DTranspose stays CONV_3D_TRANSPOSE, and so does ours with the hook
    switched off."""
    inputs = keras.Input((4, 3, 5, 6))
    theirs = keras.Model(inputs, keras.layers.Conv3DTranspose(2, 2, 2)(inputs))
    x = _samples(2)
    assert "CONV_3D_TRANSPOSE" in _names(_concrete_function_converter(theirs, "float32", x, True))
    monkeypatch.setenv(tflite_hook.ENV_SWITCH, "0")
    assert "CONV_3D_TRANSPOSE" in _names(_concrete_function_converter(_model(), "float32", x,
                                                                      False))


@pytest.mark.skipif(LEGACY_KERAS, reason="model.export(format='litert') is Keras 3's; "
                    "tf_keras models convert with from_keras_model, tested above")
@pytest.mark.parametrize("mode", ["float32", pytest.param("int8", marks=smoke)])
def test_keras3_litert_export_gives_gemm_files(mode, tmp_path):
    model, x = _model(), _samples()
    path = str(tmp_path / f"{mode}.tflite")
    model.export(path, format="litert", verbose=False, **_options(mode, x))
    with open(path, "rb") as f:
        _check(f.read(), mode, model, x)


def test_only_a_model_holding_the_layer_is_converted_under_the_hook(monkeypatch):
    """The hook forces the GEMM lowering (its int8 form for a full-integer
    file) while our model converts, and never for another model."""
    forced = []
    original = select.forced_implementation

    def spy(*args, **kwargs):
        forced.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(select, "forced_implementation", spy)
    inputs = keras.Input((3,))
    _users_converter(keras.Model(inputs, keras.layers.Dense(2)(inputs)), "float32", None)
    assert forced == []
    x = _samples(2)
    _users_converter(_model(), "float32", x)
    _users_converter(_model(), "int8", x)
    assert forced == [(("gemm",), {}), (("gemm_int8",), {})]


@smoke
def test_switched_off_by_its_variable_and_by_the_callers_forced_lowering(monkeypatch):
    model, x = _model(), _samples(2)
    with tf_conv3dt.forced_implementation("native"):
        assert "CONV_3D_TRANSPOSE" in _names(_users_converter(model, "float32", x))
    monkeypatch.setenv(tflite_hook.ENV_SWITCH, "0")
    assert "CONV_3D_TRANSPOSE" in _names(_users_converter(model, "float32", x))
