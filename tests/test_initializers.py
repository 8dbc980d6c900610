"""The checkerboard-free initializer: exactly nearest-neighbour up-sampling at initialisation."""

import numpy as np
import pytest
import tensorflow as tf

import tf_conv3dt
from tf_conv3dt._keras import LEGACY_KERAS, keras
from reference import assert_close, np_conv3d_transpose


def _nearest_neighbour(z, strides):
    """``z`` (channels_last) with every voxel repeated ``strides`` times per axis."""
    for axis, s in enumerate(strides):
        z = np.repeat(z, s, axis=axis + 1)
    return z


@pytest.mark.parametrize("kernel_size, strides, groups", [
    ((4, 4, 4), (2, 2, 2), 1), ((4, 2, 6), (2, 1, 3), 2)], ids=["k4s2", "k426-s213-groups2"])
def test_output_is_nearest_neighbour_upsampling_of_a_stride_1_convolution(kernel_size, strides,
                                                                          groups, rng):
    """Built fresh, the layer's output (valid padding) equals, in NumPy, the
    stride-1 transposed convolution of the input with the sub-kernel (every
    stride's first tap), each voxel repeated ``strides`` times."""
    layer = tf_conv3dt.Conv3DTranspose(4, kernel_size, strides, groups=groups,
                                       kernel_initializer="checkerboard_free")
    x = rng.standard_normal((2, 3, 4, 2, 4)).astype("float32")
    y = layer(x).numpy()
    kernel = layer.kernel.numpy()
    sub = kernel[::strides[0], ::strides[1], ::strides[2]]
    # Every tap is its stride block's first one: one sub-kernel for all phases.
    np.testing.assert_array_equal(kernel, _nearest_neighbour(sub[None], strides)[0])
    expected = _nearest_neighbour(np_conv3d_transpose(x, sub, groups=groups), strides)
    assert_close(y, expected)


def test_a_constant_input_gives_a_flat_output_where_glorot_gives_a_checkerboard():
    """k4 s2 on a constant volume: away from the borders, checkerboard_free's
    output holds one value per filter, glorot_uniform's several (the
    checkerboard of the phases' different sub-kernels)."""
    x = np.ones((1, 6, 6, 6, 3), np.float32)
    interior = (slice(None), *[slice(4, -4)] * 3)
    for initializer, flat in [("checkerboard_free", True), ("glorot_uniform", False)]:
        keras.utils.set_random_seed(0)
        y = tf_conv3dt.Conv3DTranspose(2, 4, 2, kernel_initializer=initializer)(x).numpy()
        values = [np.unique(np.round(y[interior][..., f], 5)).size for f in range(2)]
        assert (max(values) == 1) == flat, (initializer, values)


def test_the_kernel_keeps_the_base_initializers_scale():
    """Each tap is a draw of the base initializer for the full kernel shape:
    the standard deviation is glorot_uniform's for it (within sampling)."""
    shape = (4, 4, 4, 16, 32)
    initializer = tf_conv3dt.initializers.CheckerboardFree(strides=2)
    kernel = initializer(shape).numpy()
    fan_in, fan_out = 64 * 16, 64 * 32
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert kernel.std() == pytest.approx(limit / np.sqrt(3), rel=0.05)
    assert np.abs(kernel).max() <= limit


def test_a_kernel_length_not_a_multiple_of_its_stride_is_refused():
    with pytest.raises(ValueError) as raised:
        tf_conv3dt.Conv3DTranspose(2, 3, 2, kernel_initializer="checkerboard_free")
    assert "kernel_size=(3, 3, 3), strides=(2, 2, 2)" in str(raised.value)
    assert "axis 0: a multiple of 2" in str(raised.value)
    with pytest.raises(ValueError, match="needs the layer's strides"):
        tf_conv3dt.initializers.CheckerboardFree()((2, 2, 2, 1, 1))


def test_it_serializes_with_the_layer(tmp_path, rng):
    layer = tf_conv3dt.Conv3DTranspose(2, 4, 2, kernel_initializer=tf_conv3dt.initializers
                                       .CheckerboardFree(base="he_normal"))
    inputs = keras.Input((3, 3, 3, 2))
    model = keras.Model(inputs, layer(inputs))
    clone = tf_conv3dt.Conv3DTranspose.from_config(layer.get_config())
    assert isinstance(clone.kernel_initializer, tf_conv3dt.initializers.CheckerboardFree)
    assert clone.kernel_initializer.strides == (2, 2, 2)
    assert type(clone.kernel_initializer.base).__name__ == "HeNormal"
    path = str(tmp_path / ("model.h5" if LEGACY_KERAS else "model.keras"))
    model.save(path)
    restored = keras.models.load_model(path)
    x = rng.standard_normal((1, 3, 3, 3, 2)).astype("float32")
    assert_close(restored(tf.constant(x)), model(x), rel=1e-6)
