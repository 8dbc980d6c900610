"""Which lowerings run a call, and why: forced, asked for, rerouted, tuned or the rule's.

:func:`select` is the one place that answers it; the op runs its answer,
and the tune command and the export print its words.
"""

import contextlib
import contextvars
import warnings
from typing import NamedTuple, Optional

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops import budget, cpu, lowerings, rule, tuning
from tf_conv3dt.ops.call import Call
from tf_conv3dt.ops.lowerings import Lowering

# (lowering or None for "auto", depthwise_as_gemm) while forced_implementation is active.
_FORCED = contextvars.ContextVar("tf_conv3dt_forced_implementation", default=None)
# The list recorded() collects selections in, while it is active.
_RECORDED = contextvars.ContextVar("tf_conv3dt_recorded_selections", default=None)


@contextlib.contextmanager
def forced_implementation(implementation, one_product_per_phase=False,
                          depthwise_as_gemm=False):
    """Traces every transposed convolution in the block with ``implementation``
    (a lowering's name, "auto" to let each call choose again, or a rule of
    its own: ``{kernel relation: lowering's name}`` over every
    ``rule.RELATIONS``, as a runtime that reads the file measured them);
    ``depthwise_as_gemm``: depthwise calls run GEMM's one call instead (not
    under a lowering that keeps its calls, such as "gemm_int8", nor beyond
    ``shapes.MAX_UNROLLED`` taps). A call that names a lowering which keeps
    its calls (a quantized layer's "gemm_int8") runs it whatever is forced.

    Export uses it to put one lowering into an artifact whatever each layer
    was configured with: "gemm_int8" for integer TFLite (integer kernels
    exist for matmul, not for CONV_3D_TRANSPOSE), and for SavedModels, which
    may be served on CPUs of any kind, the sub-pixel lowering with depthwise
    layers as GEMM's one call (the forward pass fastest at worst on each,
    measured in docs/performance.md).

    ``one_product_per_phase=True`` with "gemm" is deprecated: it is
    "gemm_int8".
    """
    if isinstance(implementation, dict):
        implementation = _rule_of_its_own(implementation)
    else:
        implementation = normalised(implementation)
    if isinstance(implementation, tuple):
        raise ValueError("forced_implementation takes one lowering, not a (forward, "
                         f"gradient) pair. Received: implementation={implementation!r}")
    if one_product_per_phase:
        warnings.warn("forced_implementation's one_product_per_phase is deprecated: force "
                      "'gemm_int8'.", DeprecationWarning, stacklevel=3)
        if implementation != lowerings.get("gemm"):
            raise ValueError("one_product_per_phase=True is a form of the GEMM lowering. "
                             f"Received: implementation={implementation!r}")
        implementation = lowerings.get("gemm_int8")
    token = _FORCED.set((None if implementation == "auto" else implementation,
                         bool(depthwise_as_gemm)))
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced():
    """The lowering (or ``{kernel relation: lowering}``) that
    ``forced_implementation`` forces here, or None."""
    return (_FORCED.get() or (None, False))[0]


def _rule_of_its_own(by_relation):
    """``{kernel relation: Lowering}`` from ``{kernel relation: name}``; a
    ValueError names a missing or unknown relation, or a name that is no lowering."""
    if set(by_relation) != set(rule.RELATIONS):
        raise ValueError(f"A rule of its own names a lowering for each of "
                         f"{', '.join(map(repr, rule.RELATIONS))}. "
                         f"Received: implementation={by_relation!r}")
    lowered = {relation: normalised(name) for relation, name in by_relation.items()}
    if not all(isinstance(lowering, Lowering) for lowering in lowered.values()):
        raise ValueError(f"A rule of its own names one lowering per relation. "
                         f"Received: implementation={by_relation!r}")
    return lowered


def normalised(implementation):
    """``implementation`` as "auto", a :class:`~tf_conv3dt.ops.lowerings.Lowering`
    or a ``(forward, gradient)`` pair of them, from a registered name (any
    case), a pair of names or a Lowering; a ValueError names anything else."""
    if isinstance(implementation, Lowering):
        return implementation
    if isinstance(implementation, (tuple, list)):
        names = lowerings.names()
        if len(implementation) != 2 or not all(
                isinstance(name, Lowering) or isinstance(name, str) and name.lower() in names
                for name in implementation):
            raise ValueError(
                f"The `implementation` argument must be one of "
                f"{', '.join(map(repr, lowerings.implementations()))}, or a (forward, "
                f"gradient) pair of {', '.join(map(repr, names))}. "
                f"Received: implementation={implementation!r}")
        return tuple(name if isinstance(name, Lowering) else lowerings.get(name.lower())
                     for name in implementation)
    name = shapes.normalize_choice(implementation, "implementation",
                                   lowerings.implementations())
    return name if name == "auto" else lowerings.get(name)


class Selection(NamedTuple):
    """What runs a call, and why."""

    forward: Lowering
    gradient: Lowering
    """The lowering whose gradient training runs (``forward`` where it is its own)."""
    runs: str
    """What runs, in words: "subpixel", "native with gemm's gradient",
    "gemm's one call (depthwise)", or "one call per group"."""
    why: str
    """Where the choice came from: "forced", "asked for", "the rule (KEY,
    RELATION)", "tuned (SOURCE)", and any reroute."""
    decision: Optional[object] = None
    """Tuning's ``Decision`` where the choice was timed."""
    per_group: bool = False
    """For a grouped call: each group runs as a call of its own, which selects again."""


def select(call, implementation):
    """The :class:`Selection` for ``call`` (:class:`~tf_conv3dt.ops.call.Call`)
    asked for ``implementation`` (:func:`normalised`).

    In order: a lowering that keeps its calls; ``forced_implementation``; an
    explicit lowering or pair; else "auto": the native op on a GPU (cuDNN;
    not measured here yet) and beyond ``shapes.MAX_UNROLLED`` stride phases
    or taps, else the rule (``rule.AUTO_RULE`` at the call's rule key and
    kernel relation). A lowering that refuses the call raises its reason.
    Then a lowering that TensorFlow's kernels would get wrong is rerouted
    (``Lowering.rerouted``), and "auto" times the call where tuning is on
    and its shapes are static (``tuning.tuned``). A grouped call runs as
    one call where it is depthwise and the forward lowering runs such calls
    in one (asked or forced, or "auto" on a CPU), else one call per group.
    """
    selection = _selected(call, implementation)
    recorded = _RECORDED.get()
    if recorded is not None and not selection.per_group:
        recorded.append((tf.get_current_name_scope(), selection))
    return selection


@contextlib.contextmanager
def recorded():
    """Collects the :class:`Selection` of every call in the block (each group's
    of a grouped call), as ``(name scope, selection)`` pairs: what the tune
    command and the export print."""
    selections = []
    token = _RECORDED.set(selections)
    try:
        yield selections
    finally:
        _RECORDED.reset(token)


def _selected(call, implementation):
    forward, gradient, why = _asked(implementation, call.relation)
    if call.groups > 1:
        return _grouped(call, forward, gradient, why)
    auto = forward is None
    candidates = [lowerings.get(name) for name in lowerings.names(auto=True)]
    if auto:
        forward, why = _auto(call)
        forward, over = budget.within(call, forward,
                                      [c for c in candidates if not c.refuses(call)])
        why += f"; {over}" if over else ""
        gradient = forward
    for lowering in {forward, gradient}:
        reason = lowering.refuses(call)
        if reason:
            raise ValueError(reason)
    rerouted = {}
    for lowering in {forward, gradient}:
        instead = lowering.rerouted(call)
        if instead:
            rerouted[lowering] = lowerings.get(instead[0])
            why += f"; {lowering.name} rerouted to {instead[0]}: {instead[1]}"
    forward, gradient = (rerouted.get(lowering, lowering) for lowering in (forward, gradient))
    if auto and not call.unrolled_excess:
        timed = tuning.tuned(call, budget.fitting(call, [c for c in candidates
                                                         if not c.rerouted(call)]), forward)
        if timed is not None:
            forward, gradient, decision = timed
            return Selection(forward, gradient, _runs(forward, gradient),
                             f"tuned ({decision.source})", decision)
    return Selection(forward, gradient, _runs(forward, gradient), why)


def _asked(implementation, relation):
    """``(forward, gradient, why)`` before "auto" decides, for a call of
    kernel ``relation``: forward None for "auto"."""
    forced_lowering = forced()
    keeps = isinstance(implementation, Lowering) and implementation.keeps_its_calls
    if isinstance(forced_lowering, dict):
        forced_lowering = forced_lowering[relation]
    if forced_lowering is not None and not keeps:
        return forced_lowering, forced_lowering, "forced"
    if implementation == "auto":
        return None, None, "auto"
    forward, gradient = (implementation if isinstance(implementation, tuple)
                         else (implementation,) * 2)
    return forward, gradient, "asked for"


def _auto(call):
    """``(lowering, why)`` that "auto" runs untimed: the native op on a GPU and
    beyond the unrolled limit, else the rule's."""
    if cpu.on_a_gpu():
        return lowerings.get("native"), "auto on a GPU"
    if call.unrolled_excess:
        return lowerings.get("native"), "auto beyond the stride phases or taps others unroll"
    key = call.rule_key()
    return lowerings.get(rule.AUTO_RULE[key][call.relation]), f"the rule ({key}, {call.relation})"


def _grouped(call, forward, gradient, why):
    """A grouped call's selection: GEMM's one call where it is depthwise and
    that runs it (:func:`select`), else one call per group."""
    depthwise_as_gemm = (_FORCED.get() or (None, False))[1] and not (
        forward is not None and forward.keeps_its_calls)
    one_call = call.depthwise and (
        (forward is not None and forward.runs_depthwise_in_one_call)
        or (not call.unrolled_excess and (
            depthwise_as_gemm or (forward is None and not cpu.on_a_gpu()))))
    if not one_call:
        return Selection(forward, gradient, "one call per group", why, per_group=True)
    gemm = lowerings.get("gemm")
    reason = gemm.refuses(call)
    if reason:
        raise ValueError(reason)
    return Selection(gemm, gemm, "gemm's one call (depthwise)",
                     "forced: depthwise as gemm's one call" if depthwise_as_gemm else why)


def _runs(forward, gradient):
    if gradient is forward:
        return forward.name
    return f"{forward.name} with {gradient.name}'s gradient"


def resolve_implementation(implementation, kernel_size, strides, dtype="float32"):
    """The lowering's name that a call with this kernel size, stride and
    compute dtype runs, before timing: ``forced_implementation`` wins, then
    an explicit choice; "auto" takes the native op on a GPU (cuDNN; not
    measured here yet) and on a CPU follows ``rule.AUTO_RULE`` at
    ``rule.rule_key``, which needs only the kernel size, strides and dtype:
    it is decided at trace time whatever the batch and spatial sizes (known
    or not). Without oneDNN the native op falls back to Eigen's
    Conv3DBackprop* kernels, 30-100x slower at batch > 1, so the rule never
    takes it there. Beyond ``shapes.MAX_UNROLLED`` stride phases or kernel
    taps "auto" takes the native op, and an explicit "gemm" or "subpixel" is
    refused.
    """
    kernel_size = shapes.normalize_tuple(kernel_size, "kernel_size")
    strides = shapes.normalize_tuple(strides, "strides")
    call = Call(tf.as_dtype(dtype).name, "channels_last", (None,) * 5,
                (*kernel_size, None, None), strides, "valid", (1, 1, 1), (None,) * 3)
    forward, _, _ = _asked(normalised(implementation), call.relation)
    if forward is None:
        forward, _ = _auto(call)
    reason = forward.refuses(call)
    if reason:
        raise ValueError(reason)
    return forward.name
