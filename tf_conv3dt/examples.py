"""A synthetic 3-D segmentation task and a small U-Net, for the tutorials.

``shapes_dataset`` draws noisy volumes that each hold one solid shape (a
sphere, a cube or a torus) together with the shape's mask, so a segmentation
model can be trained and scored without downloading anything. ``unet`` builds
an encoder of Conv3D layers and a decoder of Conv3DTranspose layers; each
upsampling asks for its skip tensor's exact size (``output_shape=``), which
is what lets odd-sized volumes through a stride-2 U-Net.

Example:

>>> volumes, masks, kinds = shapes_dataset(4, 11, seed=1)
>>> volumes.shape, masks.shape, sorted(set(masks.ravel().tolist()))
((4, 11, 11, 11, 1), (4, 11, 11, 11, 1), [0.0, 1.0])
>>> tuple(unet(11).outputs[0].shape)
(None, 11, 11, 11, 1)
"""

import numpy as np
import tensorflow as tf

from tf_conv3dt._keras import keras
from tf_conv3dt.layer import Conv3DTranspose

__all__ = ["SHAPES", "dice", "shapes_dataset", "soft_dice_crossentropy", "unet"]

SHAPES = ("sphere", "cube", "torus")


def shapes_dataset(count, size, seed=0, noise=0.5):
    """Noisy volumes with one shape each, and the shapes' masks.

    Args:
      count: how many volumes.
      size: the edge of each cubic volume, in voxels (odd sizes welcome).
      seed: the NumPy random seed; the same seed gives the same data.
      noise: the standard deviation of the Gaussian noise added to every
        voxel; the shapes' brightness is drawn from [0.6, 1.0].

    Returns:
      ``(volumes, masks, kinds)``: float32 arrays of shape
      ``(count, size, size, size, 1)`` (masks are 0 or 1) and the name of
      each volume's shape.
    """
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"`count` must be an integer >= 0; received count={count!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"`size` must be an integer >= 8; received size={size!r}.")
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)
    volumes = np.empty((count, size, size, size, 1), np.float32)
    masks = np.empty_like(volumes)
    kinds = rng.integers(len(SHAPES), size=count)
    for volume, mask, kind in zip(volumes, masks, kinds):
        radius = rng.uniform(0.22, 0.32) * size
        offset = grid - rng.uniform(radius, size - 1 - radius, size=3)
        if SHAPES[kind] == "sphere":
            inside = np.linalg.norm(offset, axis=-1) <= radius
        elif SHAPES[kind] == "cube":
            inside = np.abs(offset).max(axis=-1) <= 0.8 * radius
        else:  # a ring of radius 0.65 r and tube radius 0.35 r around a random axis
            axis = rng.integers(3)
            ring = np.linalg.norm(np.delete(offset, axis, axis=-1), axis=-1) - 0.65 * radius
            inside = np.hypot(ring, offset[..., axis]) <= 0.35 * radius
        mask[..., 0] = inside
        volume[..., 0] = rng.uniform(0.6, 1.0) * inside + rng.normal(0, noise, inside.shape)
    return volumes, masks, [SHAPES[kind] for kind in kinds]


def unet(size, filters=(8, 16, 32), name="unet", upsampling_kernel=3,
         kernel_initializer="glorot_uniform"):
    """A U-Net for ``(size, size, size, 1)`` volumes, one sigmoid mask out.

    The encoder halves the size at each level after the first with a
    kernel-2, stride-2 Conv3D ("same" padding rounds up: 19 -> 10 -> 5; on
    CPUs TensorFlow's kernel-3 strided Conv3D trains several times slower);
    the decoder doubles it back with Conv3DTranspose (kernel
    ``upsampling_kernel``, stride 2, its kernel started by
    ``kernel_initializer``), asking for the skip tensor's size
    (5 -> 10 -> 19), concatenates the skip and mixes with a Conv3D.
    ``upsampling_kernel=4, kernel_initializer="checkerboard_free"`` starts
    the up-sampling free of checkerboard (a kernel that is a multiple of the
    stride).
    """
    inputs = keras.Input((size, size, size, 1), name="volume")
    x, skips = inputs, []
    for level, width in enumerate(filters):
        x = keras.layers.Conv3D(width, 3 if level == 0 else 2, strides=1 if level == 0 else 2,
                                padding="same", activation="relu")(x)
        skips.append(x)
    for skip, width in zip(skips[-2::-1], filters[-2::-1]):
        x = Conv3DTranspose(width, upsampling_kernel, 2, padding="same", activation="relu",
                            kernel_initializer=kernel_initializer)(
            x, output_shape=tuple(skip.shape[1:4]))
        x = keras.layers.Concatenate()([x, skip])
        x = keras.layers.Conv3D(width, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv3D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name=name)


@keras.saving.register_keras_serializable(package="tf_conv3dt")
def soft_dice_crossentropy(masks, predictions):
    """The segmentation loss: 1 - soft Dice, plus binary cross-entropy.

    Shapes fill a few percent of each volume, so cross-entropy alone first
    learns to say "background" everywhere; the soft Dice term (the Dice
    coefficient of the probabilities) rewards overlap with the shape only.
    One value per volume.
    """
    axes = list(range(1, len(masks.shape)))
    overlap = tf.reduce_sum(masks * predictions, axis=axes)
    total = tf.reduce_sum(masks + predictions, axis=axes)
    soft_dice = (2 * overlap + 1) / (total + 1)
    crossentropy = keras.losses.binary_crossentropy(masks, predictions)
    return 1 - soft_dice + tf.reduce_mean(crossentropy, axis=axes[:-1])


@keras.saving.register_keras_serializable(package="tf_conv3dt")
def dice(masks, predictions, threshold=0.5):
    """The Dice coefficient of each volume's thresholded prediction.

    ``2 |A n B| / (|A| + |B|)``, 1 for a perfect mask; also usable as a Keras
    metric (its mean over the batch is reported). A volume whose mask and
    prediction are both empty scores 1.
    """
    masks = tf.cast(masks, tf.float32)
    predicted = tf.cast(tf.cast(predictions, tf.float32) > threshold, tf.float32)
    axes = list(range(1, len(masks.shape)))
    overlap = tf.reduce_sum(masks * predicted, axis=axes)
    total = tf.reduce_sum(masks, axis=axes) + tf.reduce_sum(predicted, axis=axes)
    return tf.where(total > 0, 2 * overlap / tf.maximum(total, 1.0), 1.0)
