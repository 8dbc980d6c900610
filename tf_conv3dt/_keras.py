"""The one place that decides which Keras this package builds on.

TensorFlow routes ``tf.keras`` to Keras 3 unless the environment variable
``TF_USE_LEGACY_KERAS`` is set to "1"/"true"/"True", in which case it routes
to ``tf_keras``. We make the same choice with the same test, so a layer from
this package always lives in the same Keras as the user's ``tf.keras`` model.
"""

import os

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", None) in ("true", "True", "1")

if LEGACY_KERAS:
    import tf_keras as keras
else:
    import keras

    if not keras.__version__.startswith("3."):
        raise ImportError(
            "tf_conv3dt needs Keras 3 (or tf_keras with TF_USE_LEGACY_KERAS=1); "
            f"found keras=={keras.__version__}."
        )



def layer_output_shape(dims):
    """What a layer's ``compute_output_shape`` returns in this flavour, for
    the output dimensions ``dims`` (ints or None): a tuple in Keras 3, a
    ``tf.TensorShape`` in tf_keras, whose layers return one, whose
    ``compute_output_signature`` maps the result as a nested structure (a
    tuple would make one TensorSpec per dimension), and whose users call
    ``.as_list()`` on it."""
    if LEGACY_KERAS:
        import tensorflow as tf

        return tf.TensorShape(dims)
    return tuple(dims)


__all__ = ["keras", "layer_output_shape", "LEGACY_KERAS"]
