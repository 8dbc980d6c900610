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

__all__ = ["keras", "LEGACY_KERAS"]
