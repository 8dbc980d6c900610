"""Whether "auto" times: one switch, like ``torch.backends.cudnn.benchmark``, and when it must not."""

import contextlib
import os

import tensorflow as tf

from tf_conv3dt.ops import cpu

ENV_AUTOTUNE = "TF_CONV3DT_AUTOTUNE"

_switch = [None]  # set_autotune's value; None follows the environment variable


def set_autotune(enabled):
    """Switches timing on (``True``), off (``False``, the static rule decides)
    or back to ``TF_CONV3DT_AUTOTUNE`` (``None``) for this process."""
    if enabled not in (True, False, None):
        raise TypeError(f"`enabled` must be True, False or None. Received: enabled={enabled!r}")
    _switch[0] = enabled


@contextlib.contextmanager
def switched(enabled):
    """:func:`set_autotune` ``(enabled)`` for the block (or the decorated
    function), then back to what it was: for work that calls models it does
    not train, such as an export's checks or loading a model to tune. Like
    :func:`set_autotune` it sets the whole process's switch: a trace on
    another thread meanwhile sees it too."""
    previous = _switch[0]
    set_autotune(enabled)
    try:
        yield
    finally:
        _switch[0] = previous


def autotune_enabled():
    """Whether "auto" times static configurations: the Python switch, else
    ``TF_CONV3DT_AUTOTUNE`` (off for 0, false, off or no; on for 1, true,
    on or yes; unset or empty, on a CPU and off on a GPU, where no timing
    has been measured against the rule yet), and never under op
    determinism, where a run must not depend on timing."""
    if _op_determinism():
        return False
    if _switch[0] is not None:
        return _switch[0]
    value = os.environ.get(ENV_AUTOTUNE, "")
    setting = value.strip().lower()
    if setting == "":
        return not cpu.on_a_gpu()
    if setting in ("1", "true", "on", "yes"):
        return True
    if setting in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{ENV_AUTOTUNE} must be 1 or 0 (or true/false, on/off, yes/no). "
                     f"Received: {ENV_AUTOTUNE}={value!r}")


def _op_determinism():
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled()


def multi_worker():
    """Whether the call is traced for several workers, which would each time it
    on their own machine: the static rule gives them all one answer."""
    if not tf.distribute.has_strategy():
        return False
    resolver = getattr(tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None:
        return False
    spec = resolver.cluster_spec().as_dict()
    return sum(len(tasks) for tasks in spec.values()) > 1
