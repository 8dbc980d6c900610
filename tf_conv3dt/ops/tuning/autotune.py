"""Tuning's entry point: a static call's choice, from memory, the cache file or a measurement."""

import contextlib
import contextvars
import dataclasses
import json
import logging
import time
from typing import NamedTuple

import tensorflow as tf

from tf_conv3dt.ops import lowerings
from tf_conv3dt.ops.tuning import measure, policy, switch
from tf_conv3dt.ops.tuning.cache import Cache
from tf_conv3dt.ops.tuning.decision import Decision, fastest_first

_logger = logging.getLogger("tf_conv3dt")
_cache = [Cache()]


def current_cache():
    """The :class:`~tf_conv3dt.ops.tuning.cache.Cache` tuning reads and writes."""
    return _cache[0]


@contextlib.contextmanager
def caching_in(replacement):
    """Tuning reads and writes ``replacement`` (a ``Cache``) in the block."""
    previous, _cache[0] = _cache[0], replacement
    try:
        yield replacement
    finally:
        _cache[0] = previous


def forget():
    """Empties the in-memory choices (the cache file stays), as a new process starts."""
    current_cache().forget()


class _Recorder(NamedTuple):
    dtype: object
    batch: int
    serving: bool


_RECORDER = contextvars.ContextVar("tf_conv3dt_tuning_recorder", default=None)


@contextlib.contextmanager
def recording(dtype=None, batch=None, serving=False):
    """Times every static call in the block, whatever the switches say, as
    the tune command does (``ops.select.recorded`` collects what each call
    then runs). ``dtype`` times every call in that dtype instead of its own
    (a float32 model tuned for ``mixed_bfloat16``), and every batch counts
    as unknown and is timed at ``batch`` (default ``Knobs.nominal_batch``),
    as a Keras model's graph meets it. ``serving``: each call runs
    :attr:`Decision.fastest_forward` alone (with its own gradient, never a
    pair), for a model that will only serve."""
    token = _RECORDER.set(_Recorder(dtype, batch or policy.KNOBS.nominal_batch, serving))
    try:
        yield
    finally:
        _RECORDER.reset(token)


# A tf_keras layer's call is converted by AutoGraph, which would otherwise
# convert this Python (the cache's file handling included) too.
@tf.autograph.experimental.do_not_convert
def tuned(call, candidates, rule):
    """``(forward, gradient, decision)``: the lowerings "auto" runs for
    ``call`` (``ops.call.Call``, ungrouped), the measured fastest of
    ``candidates`` (``Lowering`` objects; ``policy.choose``), where the call
    is static and tuning is on; else None, and ``rule`` runs."""
    recorder = _RECORDER.get()
    if not (recorder or switch.autotune_enabled(call.dtype)) or not call.static or switch.multi_worker():
        return None
    names = [c.name for c in candidates if not c.untimed(call)]
    if len(names) < 2:
        return None
    batch, timing_batch = call.input_shape[0], call.input_shape[0] or policy.KNOBS.nominal_batch
    if recorder:
        call = dataclasses.replace(call, dtype=tf.as_dtype(recorder.dtype or call.dtype).name)
        batch, timing_batch = None, recorder.batch
    keyed = dataclasses.replace(call, input_shape=(batch, *call.input_shape[1:]))
    key, store = keyed.tuning_key(), current_cache()
    with store.lock:  # MirroredStrategy traces its replicas in threads: one tunes, all reuse
        decision = store.remembered(key)
        if decision is None:
            decision = store.stored(key) or _measure(keyed, timing_batch, names, rule.name,
                                                     batch is not None)
            store.remember(decision)
    forward, gradient = decision.forward, decision.gradient
    if recorder and recorder.serving:
        forward = gradient = decision.fastest_forward
    return lowerings.get(forward), lowerings.get(gradient), decision


def _measure(call, batch, candidates, rule, batch_known):
    """The :class:`Decision` for ``call`` (keyed) timed at ``batch`` among
    ``candidates`` (names), ``rule`` first; stored where anything was timed."""
    order = [rule, *[c for c in candidates if c != rule]] if rule in candidates else candidates
    started = time.perf_counter()
    timed = measure.timed_call(call, batch)
    on_a_block = timed.input_shape[1:4] != call.input_shape[1:4]

    def proposal(times):
        return policy.choose(times, rule, policy.ranked_gradients(times, call, on_a_block))

    times, peaks = measure.on_a_fresh_thread(measure.lowerings, timed, order, proposal)
    gradients = policy.ranked_gradients(times, call, on_a_block)
    forward, gradient = policy.choose(times, rule, gradients)
    if gradient != forward:  # timed together, as the call traces them
        split = measure.on_a_fresh_thread(measure.pair, timed, (forward, gradient),
                                          batch_known)
        alone = policy.one_lowering(times, rule, gradients)
        if split is not None:
            times[f"{forward}+{gradient}"] = (times[forward][0], split)
        if split is None or not policy.pair_wins(times[forward][0] + split, sum(times[alone]),
                                                 serves_faster=forward != alone):
            forward = gradient = alone
    decision = Decision(call.tuning_key(), forward, gradient, fastest_first(times), batch,
                        timed.input_shape[1:4], time.perf_counter() - started, "measured",
                        peaks)
    _logger.info(
        "tf_conv3dt auto: %s -> %s, timed at batch %d on input %s in %.2f s (forward + "
        "gradient ms: %s)%s", json.dumps(decision.key), decision.runs(), batch, decision.spatial,
        decision.seconds,
        ", ".join(f"{name} {f:.2f} + {t:.2f}" for name, (f, t) in decision.ms.items())
        or "none ran",
        decision.unranked)
    if times:
        current_cache().store(decision)
    return decision
