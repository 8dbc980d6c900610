"""Keras machinery: config, files, losses, constraints, composition, errors."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt._keras import LEGACY_KERAS, keras
from markers import smoke
from reference import assert_close, np_conv3d_transpose

# In the oldest-TensorFlow job too (README, "Supported versions").
pytestmark = smoke


FULL_ARGS = dict(
    filters=3, kernel_size=(3, 3, 1), strides=(2, 1, 1), padding="same",
    data_format="channels_first", output_padding=(1, 0, 0), dilation_rate=1,
    activation="relu", use_bias=True, kernel_initializer="he_normal",
    bias_initializer="ones", kernel_regularizer=keras.regularizers.L2(0.01),
    bias_regularizer=keras.regularizers.L1(0.02),
    activity_regularizer=keras.regularizers.L2(0.03),
    kernel_constraint=keras.constraints.MaxNorm(2.0),
    bias_constraint=keras.constraints.NonNeg(), implementation="gemm",
)


# Two groups of the four input channels (channels_first: the first axis).
GROUPED_ARGS = dict(FULL_ARGS, filters=4, groups=2)


def _model(layer, input_shape=(4, 5, 3, 2)):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def test_get_config_holds_every_constructor_argument():
    signature = inspect.signature(tf_conv3dt.Conv3DTranspose.__init__)
    arguments = [p for p in signature.parameters if p not in ("self", "kwargs")]
    config = tf_conv3dt.Conv3DTranspose(**FULL_ARGS).get_config()
    assert set(arguments) <= set(config), set(arguments) - set(config)
    assert config["dilation_rate"] == (1, 1, 1)
    assert config["output_padding"] == (1, 0, 0)
    assert config["implementation"] == "gemm"


def test_config_round_trip_rebuilds_identical_layer():
    layer = tf_conv3dt.Conv3DTranspose(**FULL_ARGS)
    clone = tf_conv3dt.Conv3DTranspose.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    dilated = tf_conv3dt.Conv3DTranspose(2, 3, dilation_rate=(2, 1, 3))
    assert tf_conv3dt.Conv3DTranspose.from_config(dilated.get_config()).dilation_rate == (2, 1, 3)


def test_registered_for_deserialization():
    layer = tf_conv3dt.Conv3DTranspose(2, 3)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is tf_conv3dt.Conv3DTranspose


def _file_formats():
    if LEGACY_KERAS:
        return ["model.h5", "saved_model"]
    return ["model.keras"]


@pytest.mark.parametrize("arguments", [FULL_ARGS, GROUPED_ARGS], ids=["ungrouped", "grouped"])
@pytest.mark.parametrize("filename", _file_formats())
def test_file_round_trip_without_custom_objects(filename, arguments, tmp_path, rng):
    layer = tf_conv3dt.Conv3DTranspose(**arguments)
    model = _model(layer)
    x = rng.standard_normal((2, 4, 5, 3, 2)).astype("float32")
    path = str(tmp_path / filename)
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.layers[-1], tf_conv3dt.Conv3DTranspose)
    assert restored.layers[-1].get_config() == layer.get_config()
    assert_close(restored(x), model(x), rel=1e-6)


def test_a_grouped_layer_with_pytorch_weights_computes_what_pytorch_does(rng):
    """A depthwise-separable decoder's grouped layer, ported: PyTorch's
    ConvTranspose3d(4, 8, 3, stride=2, groups=4) (no padding: "valid") and
    its weights through kernel_from_torch give PyTorch's output (float64)."""
    torch = pytest.importorskip("torch", reason="PyTorch's layer is the reference here; "
                                "the oldest-TensorFlow job installs none")
    torch.manual_seed(0)
    ported = torch.nn.ConvTranspose3d(4, 8, 3, stride=2, groups=4).double()
    weight = ported.weight.detach().numpy()
    assert weight.shape == (4, 2, 3, 3, 3)
    layer = tf_conv3dt.Conv3DTranspose(8, 3, 2, groups=4, data_format="channels_first",
                                       dtype="float64")
    x = rng.standard_normal((2, 4, 3, 5, 4))
    layer.build(x.shape)
    assert tuple(layer.kernel.shape) == (3, 3, 3, 2, 4)
    layer.set_weights([tf_conv3dt.kernel_from_torch(weight), ported.bias.detach().numpy()])
    np.testing.assert_array_equal(tf_conv3dt.kernel_to_torch(layer.kernel.numpy()), weight)
    expected = ported(torch.tensor(x)).detach().numpy()
    assert_close(layer(x), expected, rel=1e-12)


def test_regularizer_losses(rng):
    layer = tf_conv3dt.Conv3DTranspose(**FULL_ARGS)
    model = _model(layer)
    x = rng.standard_normal((2, 4, 5, 3, 2)).astype("float32")
    y = model(x)
    kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
    expected_weights = 0.01 * np.sum(kernel ** 2) + 0.02 * np.sum(np.abs(bias))
    # Activity regularisation: 0.03 * sum(y^2) / batch size, as Keras does.
    expected_activity = 0.03 * np.sum(np.square(y.numpy())) / 2
    losses = sorted(float(v) for v in layer.losses)
    assert len(losses) == 3
    np.testing.assert_allclose(sum(losses), expected_weights + expected_activity, rtol=1e-5)
    np.testing.assert_allclose(sorted(float(v) for v in model.losses), losses, rtol=1e-6)


def test_constraints_applied_after_fit(rng):
    layer = tf_conv3dt.Conv3DTranspose(2, 2, 2, kernel_constraint=keras.constraints.MaxNorm(0.1),
                                       bias_constraint=keras.constraints.NonNeg(),
                                       bias_initializer="ones")
    model = _model(layer, (3, 3, 3, 2))
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    x = rng.standard_normal((4, 3, 3, 3, 2)).astype("float32")
    # A target far below the output pushes the bias negative, so NonNeg must act.
    model.fit(x, np.full((4, 6, 6, 6, 2), -100.0, "float32"), epochs=2, verbose=0)
    kernel = layer.kernel.numpy()
    norms = np.sqrt(np.sum(kernel ** 2, axis=0))  # MaxNorm(axis=0), its default
    assert norms.max() <= 0.1 + 1e-6
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_fit_reduces_loss_against_reference_targets(implementation, rng):
    """Training end to end: the layer learns a kernel from its own outputs."""
    teacher = rng.standard_normal((3, 3, 3, 2, 2)).astype("float32") * 0.3
    x = rng.standard_normal((8, 3, 4, 3, 2)).astype("float32")
    y = np_conv3d_transpose(x, teacher, None, (2, 2, 2), "same").astype("float32")
    layer = tf_conv3dt.Conv3DTranspose(2, 3, 2, padding="same", use_bias=False,
                                       implementation=implementation)
    model = _model(layer, (3, 4, 3, 2))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    history = model.fit(x, y, epochs=40, verbose=0, batch_size=8)
    assert history.history["loss"][-1] < 0.05 * history.history["loss"][0]


def test_reference_example_in_a_functional_model():
    inputs = keras.Input((10, 8, 12, 128))
    outputs = tf_conv3dt.Conv3DTranspose(32, 2, 2, activation="relu")(inputs)
    assert tuple(outputs.shape) == (None, 20, 16, 24, 32)
    y = keras.Model(inputs, outputs)(tf.random.uniform((4, 10, 8, 12, 128)))
    assert y.shape == (4, 20, 16, 24, 32) and float(tf.reduce_min(y)) >= 0.0


def test_requested_size_in_a_functional_model():
    inputs = keras.Input((5, 4, 4, 3))
    outputs = tf_conv3dt.Conv3DTranspose(2, 3, 2, padding="same")(inputs, output_shape=(9, 8, 7))
    assert tuple(outputs.shape) == (None, 9, 8, 7, 2)


def test_compute_output_shape():
    layer = tf_conv3dt.Conv3DTranspose(4, (3, 2, 1), (2, 3, 1), data_format="channels_first")
    assert tuple(layer.compute_output_shape((None, 3, 5, None, 7))) == (None, 4, 11, None, 7)


# The flavour's own contract for shapes: tf_keras's layers answer a
# tf.TensorShape (its layer_test calls .as_list() on it), Keras 3's a tuple.
@pytest.mark.parametrize("given", [(None, 5, 7, 6, 3), tf.TensorShape((None, 5, 7, 6, 3)),
                                   [None, 5, 7, 6, 3]], ids=["tuple", "TensorShape", "list"])
def test_compute_output_shape_answers_in_the_flavours_type(given):
    layer = tf_conv3dt.Conv3DTranspose(2, 3, 2)
    shape = layer.compute_output_shape(given)
    if LEGACY_KERAS:
        assert isinstance(shape, tf.TensorShape)
        assert shape.as_list() == [None, 11, 15, 13, 2]
    else:
        assert type(shape) is tuple and shape == (None, 11, 15, 13, 2)


@pytest.mark.parametrize("dtype_policy", [None, "mixed_bfloat16"])
def test_the_output_signature_is_one_spec_of_the_output(dtype_policy):
    """tf_keras's compute_output_signature, Keras 3's compute_output_spec:
    one tensor of the output's shape in the compute dtype."""
    layer = tf_conv3dt.Conv3DTranspose(2, 3, 2, dtype=dtype_policy)
    if LEGACY_KERAS:
        spec = layer.compute_output_signature(tf.TensorSpec((None, 5, 7, 6, 3)))
        assert isinstance(spec, tf.TensorSpec), spec
    else:
        spec = layer.compute_output_spec(keras.KerasTensor((None, 5, 7, 6, 3)))
        assert isinstance(spec, keras.KerasTensor), spec
    assert tuple(spec.shape) == (None, 11, 15, 13, 2)
    assert tf.as_dtype(spec.dtype) == (tf.bfloat16 if dtype_policy else tf.float32)


def test_data_format_defaults_to_keras_config():
    assert tf_conv3dt.Conv3DTranspose(1, 1).data_format == keras.backend.image_data_format()


class TestComposition:
    def test_none_returns_layer(self):
        layer = tf_conv3dt.layer_conv_3d_transpose(None, 32, 2, 2, activation="relu")
        assert isinstance(layer, tf_conv3dt.Conv3DTranspose)
        assert layer.strides == (2, 2, 2) and layer.filters == 32

    def test_sequential_gets_layer_added(self):
        model = keras.Sequential([keras.Input((10, 8, 12, 4))])
        returned = tf_conv3dt.layer_conv_3d_transpose(model, 32, 2, 2)
        assert returned is model
        assert isinstance(model.layers[-1], tf_conv3dt.Conv3DTranspose)
        assert tuple(model.output_shape) == (None, 20, 16, 24, 32)

    def test_tensor_and_array_get_layer_applied(self):
        x = np.random.default_rng(0).uniform(size=(4, 10, 8, 12, 16)).astype("float32")
        assert tf_conv3dt.layer_conv_3d_transpose(x, 32, 2, 2).shape == (4, 20, 16, 24, 32)
        y = tf_conv3dt.layer_conv_3d_transpose(tf.constant(x), 8, 3, padding="same")
        assert y.shape == (4, 10, 8, 12, 8)

    def test_keras_tensor(self):
        inputs = keras.Input((10, 8, 12, 4))
        y = tf_conv3dt.layer_conv_3d_transpose(inputs, 32, 2, 2)
        assert tuple(y.shape) == (None, 20, 16, 24, 32)

    def test_same_arguments_and_defaults_as_layer(self):
        composed = inspect.signature(tf_conv3dt.layer_conv_3d_transpose).parameters
        layer = inspect.signature(tf_conv3dt.Conv3DTranspose.__init__).parameters
        for name, parameter in composed.items():
            if name in ("object", "kwargs"):
                continue
            assert parameter.default == layer[name].default, name


def test_bad_requested_output_shape(implementation):
    layer = tf_conv3dt.Conv3DTranspose(2, 3, 2, implementation=implementation)
    x = tf.zeros((1, 4, 4, 4, 1))
    with pytest.raises(ValueError, match="between 9 and 10"):
        layer(x, output_shape=(12, 9, 9))
    with pytest.raises(ValueError, match="output_shape=0"):
        layer(x, output_shape=0)
