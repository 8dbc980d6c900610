"""Measured "auto": times the exact lowerings of a static call here and remembers the fastest.

The first time ``implementation="auto"`` meets a configuration whose dtype,
layout, input shape, kernel, strides, padding, dilation and output size are
all known at trace time, :func:`tuned` times every eligible lowering (the
forward pass, and its gradient with respect to the input and the kernel)
and keeps the one fastest over both (``policy.one_lowering``; the rule's
choice unless another beats it by ``Knobs.rule_margin``), or a pair: the
fastest forward differentiated as the fastest gradient where that pair,
timed together as the call traces it, trains faster still
(``policy.choose``, ``measure.pair``). The choice is kept by a
:class:`Cache`, in memory and in a JSON file per machine environment.

The package, a job per module: ``switch`` (on or off), ``cache``,
``timer`` (its clock injected), ``policy`` (the knobs in one record,
``policy.KNOBS``, and how times become a choice), ``measure`` (what is
timed), ``decision`` (the record of a choice) and ``autotune`` (the entry
point and the tune command's recording).

On a CPU timing is on unless ``TF_CONV3DT_AUTOTUNE=0`` or
``set_autotune(False)`` switch it off. On a GPU, where nothing has been
measured, it is off unless switched on. A batch unknown at trace time
(every Keras model's graph) is timed at ``Knobs.nominal_batch``, and on a
CPU a configuration of more than ``Knobs.max_timed_products``
multiply-adds on a smaller block of its input (``measure.timed_shape``).
A lowering may decline to be timed here (``Lowering.untimed``: the native
op without oneDNN). Without static spatial sizes, with tuning off, under
``tf.config.experimental.enable_op_determinism()`` or across several
workers, the static rule (``rule.AUTO_RULE``) decides.
"""

from tf_conv3dt.ops.tuning.autotune import (caching_in, current_cache, forget, recording,
                                            tuned)
from tf_conv3dt.ops.tuning.cache import ENV_CACHE_DIR, FORMAT, Cache, environment
from tf_conv3dt.ops.tuning.decision import Decision, fastest_first, lowering_times
from tf_conv3dt.ops.tuning.policy import Knobs
from tf_conv3dt.ops.tuning.switch import (ENV_AUTOTUNE, autotune_enabled, set_autotune,
                                          switched)
from tf_conv3dt.ops.tuning.timer import Timer

__all__ = ["Cache", "Decision", "ENV_AUTOTUNE", "ENV_CACHE_DIR", "FORMAT", "Knobs",
           "Timer", "autotune_enabled", "caching_in", "current_cache", "environment",
           "fastest_first", "forget", "lowering_times", "recording", "set_autotune",
           "switched", "tuned"]
