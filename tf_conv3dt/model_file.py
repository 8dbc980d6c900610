"""Opening a user's .keras file: safe mode, not compiled, and a one-line reason where it fails."""

import os

from tf_conv3dt._keras import keras


def load(path):
    """The model saved at ``path``; a ValueError saying what is wrong with the
    file (the caller names the argument it came from)."""
    if not isinstance(path, str) or not os.path.isfile(path):
        raise ValueError("does not exist or is not a file")
    if not path.endswith(".keras"):
        raise ValueError("unknown format; expected a .keras file")
    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # corrupt zip, bad config, unsafe lambda, ...
        raise ValueError(f"could not be loaded: {type(error).__name__}: "
                         f"{(str(error).strip().splitlines() or [''])[0]}") from None
