"""Every bad input to the layer, its call, the op, the composition function and
from_config ends in a clear error: the expected exception type, with a message
naming the argument and the value (the export command's table is in test_export_command.py).

Each row runs before any large TensorFlow op could: sizes that cannot fit in
int32 or memory are refused by arithmetic on the arguments.
"""

import numpy as np
import pytest
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt.ops import lowerings
from tf_conv3dt._keras import keras

Layer = tf_conv3dt.Conv3DTranspose
X = np.zeros((1, 2, 2, 2, 3), np.float32)
KERNEL = np.zeros((2, 2, 2, 4, 3), np.float32)


def _built(input_channels=3, **kwargs):
    layer = Layer(2, 2, **kwargs)
    layer(np.zeros((1, 2, 2, 2, input_channels), np.float32))
    return layer


def _traced_with_unknown_rank():
    layer = Layer(2, 2)
    tf.function(layer.__call__).get_concrete_function(tf.TensorSpec(None, tf.float32))


def _from_config(**changes):
    config = Layer(2, 2).get_config()
    config.update(changes)
    return Layer.from_config(config)


def _op(inputs=X, kernel=KERNEL, **kwargs):
    return tf_conv3dt.conv3d_transpose(inputs, kernel, **kwargs)


def case(id, make, error, *words):
    return pytest.param(make, error, words, id=id)


CONSTRUCTOR = [
    case("filters=0", lambda: Layer(0, 3), ValueError, "filters=0"),
    case("filters=2.0", lambda: Layer(2.0, 3), ValueError, "filters=2.0"),
    case("filters=True", lambda: Layer(True, 3), ValueError, "filters=True"),
    case("filters='2'", lambda: Layer("2", 3), ValueError, "filters='2'"),
    case("kernel_size=(3, 3)", lambda: Layer(2, (3, 3)), ValueError, "kernel_size=(3, 3)"),
    case("kernel_size=0", lambda: Layer(2, 0), ValueError, "kernel_size=0"),
    case("kernel_size=2.5", lambda: Layer(2, 2.5), TypeError, "kernel_size=2.5"),
    case("kernel_size='3'", lambda: Layer(2, "3"), TypeError, "kernel_size='3'"),
    case("kernel_size=set", lambda: Layer(2, {2, 3, 4}), TypeError, "kernel_size={2, 3, 4}"),
    case("kernel_size=dict", lambda: Layer(2, {0: 2}), TypeError, "kernel_size={0: 2}"),
    case("kernel_size=None", lambda: Layer(2, None), TypeError, "kernel_size=None"),
    case("kernel_size=2**31", lambda: Layer(2, 2**31), ValueError, "kernel_size", "2147483647"),
    case("strides=-1", lambda: Layer(2, 3, strides=-1), ValueError, "strides=-1"),
    case("strides=2**31", lambda: Layer(2, 3, strides=2**31), ValueError, "strides=2147483648"),
    case("strides=(1, 2, 3, 4)", lambda: Layer(2, 3, strides=(1, 2, 3, 4)), ValueError,
         "strides=(1, 2, 3, 4)"),
    case("padding='full'", lambda: Layer(2, 3, padding="full"), ValueError, "padding='full'"),
    case("padding=None", lambda: Layer(2, 3, padding=None), ValueError, "padding=None"),
    case("data_format='NDHWC'", lambda: Layer(2, 3, data_format="NDHWC"), ValueError,
         "data_format='NDHWC'"),
    case("output_padding=stride", lambda: Layer(2, 3, strides=2, output_padding=2),
         ValueError, "output_padding=(2, 2, 2)"),
    case("output_padding=-1", lambda: Layer(2, 3, output_padding=-1), ValueError,
         "output_padding=-1"),
    case("same, even kernel, output_padding=0",
         lambda: Layer(2, 2, strides=2, padding="same", output_padding=0), ValueError,
         "output_padding", "even"),
    case("dilation_rate=0", lambda: Layer(2, 3, dilation_rate=0), ValueError,
         "dilation_rate=0"),
    case("strides and dilation", lambda: Layer(2, 3, strides=2, dilation_rate=2), ValueError,
         "incompatible", "strides=(2, 2, 2)"),
    case("dilated span beyond int32", lambda: Layer(2, 3, dilation_rate=2**30 + 1),
         ValueError, "dilation_rate", "2147483647"),
    case("activation='swoosh'", lambda: Layer(2, 3, activation="swoosh"), ValueError,
         "swoosh"),
    case("use_bias='False'", lambda: Layer(2, 3, use_bias="False"), TypeError,
         "use_bias='False'"),
    case("use_bias=0", lambda: Layer(2, 3, use_bias=0), TypeError, "use_bias=0"),
    case("kernel_initializer='nope'", lambda: Layer(2, 3, kernel_initializer="nope"),
         ValueError, "nope"),
    case("bias_initializer='nope'", lambda: Layer(2, 3, bias_initializer="nope"),
         ValueError, "nope"),
    case("kernel_regularizer='nope'", lambda: Layer(2, 3, kernel_regularizer="nope"),
         ValueError, "nope"),
    case("bias_regularizer='nope'", lambda: Layer(2, 3, bias_regularizer="nope"),
         ValueError, "nope"),
    case("activity_regularizer='nope'", lambda: Layer(2, 3, activity_regularizer="nope"),
         ValueError, "nope"),
    case("kernel_constraint='nope'", lambda: Layer(2, 3, kernel_constraint="nope"),
         ValueError, "nope"),
    case("bias_constraint='nope'", lambda: Layer(2, 3, bias_constraint="nope"),
         ValueError, "nope"),
    case("implementation='fast'", lambda: Layer(2, 3, implementation="fast"), ValueError,
         "implementation='fast'"),
    case("quantization='int4'", lambda: Layer(2, 3, quantization="int4"), ValueError,
         "quantization='int4'"),
    case("groups=0", lambda: Layer(2, 3, groups=0), ValueError, "groups=0"),
    case("groups=2.0", lambda: Layer(2, 3, groups=2.0), ValueError, "groups=2.0"),
    case("groups=True", lambda: Layer(2, 3, groups=True), ValueError, "groups=True"),
    case("groups not dividing the filters", lambda: Layer(2, 3, groups=3), ValueError,
         "`groups`=3", "the filters, 2"),
    # Keras 3 raises ValueError, tf_keras TypeError.
    case("unknown keyword", lambda: Layer(2, 3, stride=2), (TypeError, ValueError), "stride"),
]

CALL = [
    case("groups not dividing the input channels", lambda: Layer(2, 2, groups=2)(X),
         ValueError, "`groups`=2", "the input channels, 3"),
    case("rank 4", lambda: Layer(2, 3)(np.zeros((2, 4, 4, 3), np.float32)), ValueError,
         "5-D", "input_shape=(2, 4, 4, 3)"),
    case("0-d array", lambda: Layer(2, 3)(np.float32(1)), ValueError, "5-D",
         "input_shape=()"),
    case("unknown rank", _traced_with_unknown_rank, ValueError, "rank", "unknown"),
    case("unknown channels", lambda: Layer(2, 3)(keras.Input((4, 4, 4, None))), ValueError,
         "channel", "None"),
    case("other channels after build",
         lambda: _built()(np.zeros((1, 2, 2, 2, 5), np.float32)), ValueError,
         "axis -1", "value 3"),
    case("complex", lambda: Layer(2, 2)(tf.complex(X, X)), TypeError, "dtype=complex64"),
    case("bool", lambda: Layer(2, 2)(X > 0), TypeError, "dtype=bool"),
    case("string", lambda: Layer(2, 2)(tf.fill((1, 2, 2, 2, 3), "a")), TypeError,
         "dtype=string"),
    case("ragged", lambda: Layer(2, 2)(tf.RaggedTensor.from_row_lengths(
        np.zeros((3, 2, 2, 2, 3), np.float32), [1, 2])), TypeError, "RaggedTensor"),
    case("sparse", lambda: Layer(2, 2)(tf.sparse.from_dense(X)), TypeError, "SparseTensor"),
    case("output_shape unreachable", lambda: Layer(2, 3, 2)(
        np.zeros((1, 4, 4, 4, 1), np.float32), output_shape=(12, 9, 9)), ValueError,
         "output_shape=(12, 9, 9)", "between 9 and 10"),
    case("output_shape=0", lambda: Layer(2, 3)(X, output_shape=0), ValueError,
         "output_shape=0"),
    case("output_shape='big'", lambda: Layer(2, 3)(X, output_shape="big"), TypeError,
         "output_shape='big'"),
    case("output beyond int32 elements", lambda: Layer(2, 2, strides=2**20)(X), ValueError,
         "more than 2147483647 elements"),
    case("gemm with 10**6 phases", lambda: Layer(2, 1, strides=100, implementation="gemm")(X),
         ValueError, "implementation='gemm'", "1000000 stride phases", "strides=(100, 100, 100)"),
    case("subpixel with 35937 taps",
         lambda: Layer(2, 33, implementation="subpixel")(np.zeros((1, 1, 1, 1, 3), "float32")),
         ValueError, "implementation='subpixel'", "35937 kernel taps"),
]

OP = [
    case("groups not dividing the kernel's input channels", lambda: _op(groups=2), ValueError,
         "`groups`=2", "the input channels, 3"),
    case("grouped bias of one group's filters", lambda: _op(groups=3, bias=np.zeros(4)),
         ValueError, "`bias` must have shape (12,)", "bias.shape=(4,)"),
    case("inputs int32", lambda: _op(X.astype("int32"), KERNEL.astype("int32")), TypeError,
         "`inputs`", "dtype=int32"),
    case("inputs int32, native",
         lambda: _op(X.astype("int32"), KERNEL.astype("int32"), implementation="native"),
         TypeError, "`inputs`", "dtype=int32"),
    case("inputs complex", lambda: _op(tf.complex(X, X)), TypeError, "dtype=complex64"),
    case("inputs ragged", lambda: _op(tf.RaggedTensor.from_row_lengths(
        np.zeros((3, 2, 2, 2, 3), np.float32), [1, 2])), TypeError, "RaggedTensor"),
    case("inputs a string", lambda: _op("voxels"), TypeError, "`inputs`", "string"),
    case("inputs rank 4", lambda: _op(X[0]), ValueError, "5-D", "inputs.shape=(2, 2, 2, 3)"),
    case("kernel of another dtype", lambda: _op(kernel=tf.constant(KERNEL, tf.float64)),
         TypeError, "`kernel` has dtype float64", "float32"),
    case("kernel rank 4", lambda: _op(kernel=KERNEL[0]), ValueError, "kernel.shape=(2, 2, 4, 3)"),
    case("kernel channels", lambda: _op(kernel=KERNEL[..., :2]), ValueError,
         "3 channels", "expects 2"),
    case("bias of 3 values for 4 filters", lambda: _op(bias=np.zeros(3, np.float32)),
         ValueError, "bias", "(4,)", "bias.shape=(3,)"),
    case("activation='sigmoid'", lambda: _op(activation="sigmoid"), ValueError,
         "activation='sigmoid'", "'relu6'"),
    case("strides=0", lambda: _op(strides=0), ValueError, "strides=0"),
    case("padding='full'", lambda: _op(padding="full"), ValueError, "padding='full'"),
    case("data_format='NCDHW'", lambda: _op(data_format="NCDHW"), ValueError,
         "data_format='NCDHW'"),
    case("output_padding=(1, 1)", lambda: _op(output_padding=(1, 1)), ValueError,
         "output_padding=(1, 1)"),
    case("dilation_rate=2.0", lambda: _op(dilation_rate=2.0), TypeError, "dilation_rate=2.0"),
    case("output_shape too large", lambda: _op(output_shape=(9, 3, 3)), ValueError,
         "between 3 and 3"),
    case("implementation='cuda'", lambda: _op(implementation="cuda"), ValueError,
         "implementation='cuda'"),
    case("phase products with native",
         lambda: _op(implementation="native", one_product_per_phase=True), ValueError,
         "one_product_per_phase", "implementation='native'"),
    case("a pair of one", lambda: _op(implementation=("gemm",)), ValueError,
         "(forward, gradient) pair", "implementation=('gemm',)"),
    case("auto in a pair", lambda: _op(implementation=("auto", "gemm")), ValueError,
         "(forward, gradient) pair", "implementation=('auto', 'gemm')"),
    case("phase products with another's gradient",
         lambda: _op(implementation=("gemm", "native"), one_product_per_phase=True),
         ValueError, "one_product_per_phase", "implementation=('gemm', 'native')"),
    case("output length beyond int32", lambda: _op(strides=(2**30, 1, 1)), ValueError,
         "more than 2147483647 elements"),
]

COMPOSITION = [
    case("object a string", lambda: tf_conv3dt.layer_conv_3d_transpose("x", 2, 3), TypeError,
         "object", "str"),
    case("object a list", lambda: tf_conv3dt.layer_conv_3d_transpose([X], 2, 3), TypeError,
         "object", "list"),
    case("filters=-1", lambda: tf_conv3dt.layer_conv_3d_transpose(None, -1, 3), ValueError,
         "filters=-1"),
    case("strides twice", lambda: tf_conv3dt.layer_conv_3d_transpose(None, 2, 3, 2, strides=2),
         TypeError, "strides"),
]

FROM_CONFIG = [
    case("strides=[2**31]*3", lambda: _from_config(strides=[2**31] * 3), ValueError,
         "strides=(2147483648, 2147483648, 2147483648)"),
    case("kernel_size=[]", lambda: _from_config(kernel_size=[]), ValueError, "kernel_size=()"),
    case("padding='SAME '", lambda: _from_config(padding="SAME "), ValueError,
         "padding='SAME '"),
    case("use_bias='False'", lambda: _from_config(use_bias="False"), TypeError,
         "use_bias='False'"),
    case("implementation=None", lambda: _from_config(implementation=None), ValueError,
         "implementation=None"),
    case("unknown key", lambda: _from_config(kernel=[1]), (TypeError, ValueError), "kernel"),
    case("filters missing", lambda: Layer.from_config({"kernel_size": 2}), TypeError,
         "filters"),
]


TABLE = [pytest.param(*row.values, id=f"{group}: {row.id}")
         for group, rows in [("layer", CONSTRUCTOR), ("call", CALL), ("op", OP),
                             ("composition", COMPOSITION), ("from_config", FROM_CONFIG)]
         for row in rows]


@pytest.mark.parametrize("make,error,words", TABLE)
def test_bad_input_is_a_clear_error(make, error, words):
    with pytest.raises(error) as info:
        make()
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert "Traceback" not in message and len(message) < 1000, message


def test_every_constructor_argument_has_a_row():
    import inspect

    rows = " ".join(p.id for p in CONSTRUCTOR + FROM_CONFIG)
    for name in inspect.signature(Layer.__init__).parameters:
        if name not in ("self", "kwargs"):
            assert name in rows, name


def test_integer_inputs_are_cast_like_floats_on_every_implementation(rng):
    """uint8 / int16 voxels give the float32 result of the same values."""
    values = rng.integers(0, 255, size=(2, 3, 4, 3, 3))
    for implementation in lowerings.implementations():
        layer = Layer(2, 3, 2, implementation=implementation)
        expected = layer(values.astype("float32"))
        for dtype in ("uint8", "int16", "int32"):
            np.testing.assert_array_equal(layer(values.astype(dtype)), expected)
