"""Whether "auto" times: one switch, like ``torch.backends.cudnn.benchmark``, and when it must not."""

import contextlib
import os

import tensorflow as tf

from tf_conv3dt.ops import cpu, rule

ENV_AUTOTUNE = "TF_CONV3DT_AUTOTUNE"

_switch = [None]  # set_autotune's value; None follows the environment variable

# Where "auto" times with TF_CONV3DT_AUTOTUNE unset: the (rule key, compute
# dtype) pairs where tuned "auto" beat the static rule in the worst case over
# forward and training step in most runs of every CPU measured (see
# docs/performance.md, "When to tune"). It lost in most runs under oneDNN
# on AVX2 and AVX-512 and in bfloat16, and was never measured on a GPU.
TUNED_BY_DEFAULT = frozenset({("eigen", "float32"), ("onednn amx", "float32")})


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


def autotune_enabled(dtype="float32"):
    """Whether "auto" times static configurations computed in ``dtype``: the
    Python switch, else ``TF_CONV3DT_AUTOTUNE`` (off for 0, false, off or no;
    on for 1, true, on or yes; unset or empty, on where ``TUNED_BY_DEFAULT``
    holds this CPU configuration and dtype, and never on a GPU), and never
    under op determinism, where a run must not depend on timing."""
    if _op_determinism():
        return False
    if _switch[0] is not None:
        return _switch[0]
    value = os.environ.get(ENV_AUTOTUNE, "")
    setting = value.strip().lower()
    if setting == "":
        return (not cpu.on_a_gpu()
                and (rule.rule_key(dtype), tf.as_dtype(dtype).name) in TUNED_BY_DEFAULT)
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
