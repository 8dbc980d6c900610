"""Measured "auto": times the exact lowerings of a static call here and remembers the fastest.

The first time ``implementation="auto"`` meets a configuration whose dtype,
layout, input shape, kernel, strides, padding, dilation and output size are
all known at trace time, :func:`tuned` times every eligible lowering (the
forward pass, and its gradient with respect to the input and the kernel)
and keeps the one fastest over both (:func:`one_lowering`; the rule's
choice unless another beats it by :data:`RULE_MARGIN`), or a pair: the
fastest forward differentiated as the fastest gradient where that pair,
timed together as the call traces it, trains faster still (:func:`choose`,
:func:`measure_split`). The choice is kept in memory and in a
JSON file per machine environment (:func:`cache_path`); a file written under
another TensorFlow, tf_conv3dt, device or oneDNN setting has another name and
an environment record that must match, so it is never reused.

On a CPU timing is on unless ``TF_CONV3DT_AUTOTUNE=0`` or
``set_autotune(False)`` switch it off: in the benchmarks of 2026-12-03
after :func:`ranked_gradients`, its choices ran as fast as the rule's or
faster in each oneDNN configuration, over the cases and in the worst one
(docs/performance.md). On a GPU, where nothing has been measured, it is
off unless switched on. A batch unknown at trace time (every
Keras model's graph) is timed at :data:`NOMINAL_BATCH`, and on a CPU a
configuration of more than :data:`MAX_TIMED_PRODUCTS` multiply-adds on a
smaller block of its input (:func:`timed_shape`). Without oneDNN the
native op is not timed (:func:`eligible`), as the rule never takes it
there. Without static
spatial sizes, with tuning off, under
``tf.config.experimental.enable_op_determinism()`` or across several workers,
the static rule (``choice.AUTO_RULE``) decides.
"""

import contextlib
import contextvars
import functools
import hashlib
import json
import logging
import math
import os
import tempfile
import threading
import time
from typing import NamedTuple

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops import choice

try:
    import fcntl
except ImportError:  # Windows: writes stay atomic, concurrent merges may lose an entry
    fcntl = None

ENV_AUTOTUNE = "TF_CONV3DT_AUTOTUNE"
ENV_CACHE_DIR = "TF_CONV3DT_CACHE_DIR"

# The batch a configuration whose batch is unknown is timed at: the smallest
# above 1, because TensorFlow's Eigen Conv3DBackprop* kernels are fast at
# batch 1 only (30-100x slower above it), and a ranking taken at batch 1
# would pick the native op for training it then runs slowly; larger batches
# scale every lowering's GEMMs alike and cost more tuning time.
NOMINAL_BATCH = 2

BUDGET_S = 2.0
"""Time one configuration's timing runs may take, tracing included, and
the timing of a proposed pair (:func:`pair_seconds`) with them."""
DROP_RATIO = 3.0
"""A candidate this many times slower than the best so far, in its forward
pass, in its gradient and over both, is not timed again."""
RACE_RATIO = 1.5
"""A warmed-up candidate this many times slower than the best over
forward plus gradient, in its forward pass alone and in its gradient alone
(:func:`choose` takes each from its fastest) is not timed in rounds:
rounds separate close candidates, and
warm-up times ran up to about 20% above the rounds' lowest here, so this
margin leaves none behind that could win."""
RULE_MARGIN = 0.05
"""A candidate replaces the rule's choice only when faster than it by more
than this fraction: closer timings are within this machine's noise, and the
rule comes from many benchmark runs."""
MAX_TIMED_PRODUCTS = 2**28
"""Multiply-adds of one forward pass (batch x input voxels x channels x
filters per group x kernel taps) above which a configuration is timed on
a smaller block of its input on a CPU (:func:`timed_shape`). Timed at their
own size, the benchmark's six cases above it took 1.8-22.7 s to tune on a
2-core AVX-512 EPYC (benchmarks/bench_tuning_block.py: oneDNN in float32
and bfloat16, oneDNN held to AVX2, Eigen); on the block, 0.8-2.3 s, and the
block's choice (one lowering, before tuning paired forwards and
gradients) ran within 1.12x of the whole size's fastest over forward plus
training step, its fastest forward within 1.28x. ``float("inf")``
times every configuration at its own size."""
MIN_TIMED_LENGTH = 8
"""A spatial length :func:`timed_shape` does not halve below."""
CANDIDATES = shapes.LOWERINGS
FORMAT = 7

_logger = logging.getLogger("tf_conv3dt")
_lock = threading.RLock()
_memory = {}
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
        return not choice.on_a_gpu()
    if setting in ("1", "true", "on", "yes"):
        return True
    if setting in ("0", "false", "off", "no"):
        return False
    raise ValueError(f"{ENV_AUTOTUNE} must be 1 or 0 (or true/false, on/off, yes/no). "
                     f"Received: {ENV_AUTOTUNE}={value!r}")


def _op_determinism():
    from tensorflow.python.framework import config

    return config.is_op_determinism_enabled()


def cache_path():
    """This environment's cache file: under ``TF_CONV3DT_CACHE_DIR``, else the
    user's cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``)/tf_conv3dt."""
    directory = os.environ.get(ENV_CACHE_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "tf_conv3dt")
    digest = hashlib.sha256(json.dumps(environment(), sort_keys=True).encode()).hexdigest()
    return os.path.join(directory, f"auto-{digest[:16]}.json")


def environment():
    """What a timing depends on besides the call: TensorFlow's and this
    package's versions, the device and the CPU configuration."""
    from importlib import metadata

    try:
        version = metadata.version("tf_conv3dt")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"tensorflow": tf.__version__, "tf_conv3dt": version, "device": _device(),
            "cpu_configuration": choice.cpu_configuration(), "isa": choice.cpu_isa(),
            "cores": os.cpu_count()}


def _device():
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU {details.get('device_name', 'unknown')} " \
               f"{details.get('compute_capability', '')}".strip()
    return f"CPU {choice.cpu_model()}"


def configuration_key(dtype, data_format, input_shape, kernel_shape, strides, padding,
                      dilation, output_lengths):
    """The cache key of one call: every argument the lowerings' cost depends on
    (the batch as the trace knows it: None for a Keras model's graph)."""
    return json.dumps([tf.as_dtype(dtype).name, data_format, list(input_shape),
                       list(kernel_shape), list(strides), padding, list(dilation),
                       list(output_lengths)])


def timed_shape(batch, input_shape, kernel_shape, strides, output_lengths):
    """The input's spatial lengths and the output lengths a configuration is
    timed at: its own, or on a CPU, where one forward pass takes more than
    :data:`MAX_TIMED_PRODUCTS` multiply-adds, a block of the input halved
    along its longest axis until it does not (no axis below
    :data:`MIN_TIMED_LENGTH`), with each output length shortened by the
    stride times what its input lost, which keeps the padding.

    oneDNN's kernels, and the GEMMs and forward convolutions of the other
    lowerings, run at a steady rate per product on such sizes, so the block
    ranks the lowerings as the whole does (:data:`MAX_TIMED_PRODUCTS`) in a
    fraction of the time, but for oneDNN's gradient of the native op where
    the kernel equals the stride (:func:`ranked_gradients`). Eigen's
    Conv3DBackprop* kernels, which the native op runs without oneDNN, do
    not (:func:`eligible`). On a GPU (not
    measured) every call is timed at its size."""
    spatial = list(input_shape[:3])
    if not choice.on_a_gpu():
        per_voxel = batch * input_shape[3] * kernel_shape[3] * math.prod(kernel_shape[:3])
        while (per_voxel * math.prod(spatial) > MAX_TIMED_PRODUCTS
               and max(spatial) > MIN_TIMED_LENGTH):
            axis = spatial.index(max(spatial))
            spatial[axis] = max(MIN_TIMED_LENGTH, -(-spatial[axis] // 2))
    output = [length - (whole - timed) * stride for length, whole, timed, stride in
              zip(output_lengths, input_shape[:3], spatial, strides)]
    return tuple(spatial), tuple(output)


def eligible(candidates):
    """``candidates`` less the native op on a CPU without oneDNN, where the
    rule never takes it either: its Conv3DBackprop* kernels collapse on some
    shapes (51-58x the fastest lowering over forward plus training step on
    the benchmark's batch-4 case, 18-21x on (1, 16^3, 64) k4 s2), their rate
    per product varies with size, so a block of the input would misrank
    them, and timing them at the whole size cost up to 24 s a configuration.
    In the six Eigen runs kept in benchmarks/results/ (nine cases each) it
    was the fastest in 7 of 54 cases: by 13-17% on (1, 64^3, 32) k3 s2 in
    four of six runs, by 4.6% on (1, 32^3, 64) k3 s2 once, and by 1.5-5.5%
    on k1 s2 at batch 2 twice; what tuning gives up here for its budget."""
    if choice.cpu_configuration() == "eigen" and not choice.on_a_gpu():
        return [c for c in candidates if c != "native"]
    return list(candidates)


class Decision(NamedTuple):
    """One configuration's choice: the key, the lowering the forward pass
    runs and the one whose gradient training runs, each candidate's
    (forward, gradient) ms (and a proposed pair's, "forward+gradient",
    where one was timed together: :func:`measure_split`), the batch and
    input spatial lengths they were timed at (:func:`timed_shape`), the
    seconds the timing took (tracing included; what :data:`BUDGET_S`
    bounds), and where the choice came from ("measured", "cache" or
    "memory")."""

    key: str
    forward: str
    gradient: str
    ms: dict
    batch: int
    spatial: tuple
    seconds: float
    source: str

    @property
    def fastest_forward(self):
        """The lowering timed with the fastest forward pass (what a model
        that only serves runs), or the forward where none was timed."""
        return min(lowering_times(self.ms), key=lambda name: self.ms[name][0],
                   default=self.forward)

    @property
    def unranked(self):
        """What the log line and :meth:`describe` add for each timed
        lowering whose gradient the block it was timed on does not rank
        (:func:`ranked_gradients`): "; native's gradient not ranked on a
        block", or nothing."""
        shape, kernel, strides = (json.loads(self.key)[i] for i in (2, 3, 4))
        times = lowering_times(self.ms)
        on_a_block = tuple(shape[1:4]) != tuple(self.spatial)
        ranked = ranked_gradients(times, on_a_block, kernel, strides)
        return "".join(f"; {name}'s gradient not ranked on a block" for name in sorted(times)
                       if name not in ranked)

    def runs(self, serving=False):
        """What runs, in words: the forward lowering, with the gradient's
        where it differs (``serving``: the fastest forward, alone)."""
        if serving:
            return f"{self.fastest_forward} (fastest forward)"
        if self.gradient == self.forward:
            return self.forward
        return f"{self.forward} with {self.gradient}'s gradient"

    def describe(self, serving=False):
        """One line: the configuration, each candidate's forward/gradient ms,
        and what runs (:meth:`runs`) with the source."""
        dtype, data_format, shape, kernel, strides, padding, dilation, out = json.loads(
            self.key)
        times = "  ".join(f"{name} {f:.2f}/{t:.2f}" for name, (f, t) in self.ms.items())
        # The key holds the input as the lowerings see it, channels last.
        block = "" if tuple(shape[1:4]) == tuple(self.spatial) else f" on {tuple(self.spatial)}"
        given = shape[1:] if data_format == "channels_last" else [shape[4], *shape[1:4]]
        return (f"{dtype} {data_format} input {tuple(given)} at batch {self.batch}"
                f"{block}, "
                f"kernel {tuple(kernel[:3])} -> {kernel[3]} filters, strides "
                f"{tuple(strides)}, {padding}, dilation {tuple(dilation)}, output "
                f"{tuple(out)} | ms forward/gradient: {times or 'none timed'} | "
                f"{self.runs(serving)} ({self.source}){self.unranked}")


class _Recorder(NamedTuple):
    decisions: list
    dtype: object
    batch: int
    serving: bool


_RECORDER = contextvars.ContextVar("tf_conv3dt_tuning_recorder", default=None)


@contextlib.contextmanager
def recording(dtype=None, batch=None, serving=False):
    """Collects every decision of the block in a list, as (name scope,
    :class:`Decision`) pairs (what the tune command prints), tuning whatever
    the switches say. ``dtype`` times every call in
    that dtype instead of its own (a float32 model tuned for
    ``mixed_bfloat16``), and every batch counts as unknown and is timed at
    ``batch`` (default :data:`NOMINAL_BATCH`), as a Keras model's graph meets
    it. ``serving``: each call runs :attr:`Decision.fastest_forward` alone
    (with its own gradient, never a pair), for a model that will only serve."""
    decisions = []
    token = _RECORDER.set(_Recorder(decisions, dtype, batch or NOMINAL_BATCH, serving))
    try:
        yield decisions
    finally:
        _RECORDER.reset(token)


# A tf_keras layer's call is converted by AutoGraph, which would otherwise
# convert this Python (the cache's file handling included) too.
@tf.autograph.experimental.do_not_convert
def tuned(x, kernel, strides, padding, dilation, output_lengths, data_format, candidates,
          rule):
    """The (forward, gradient) lowerings "auto" runs for ``x`` (NDHWC) and
    ``kernel``: the measured fastest of ``candidates`` (:func:`choose`) where
    the call is static and tuning is on, else ``rule`` for both."""
    recorder = _RECORDER.get()
    static = x.shape[1:].is_fully_defined() and None not in output_lengths
    if not (recorder or autotune_enabled()) or not static or _multi_worker():
        return rule, rule
    candidates = eligible(candidates)
    if len(candidates) < 2:
        return rule, rule
    dtype, batch, timing_batch = x.dtype, x.shape[0], x.shape[0] or NOMINAL_BATCH
    if recorder:
        dtype, batch, timing_batch = recorder.dtype or dtype, None, recorder.batch
    key = configuration_key(dtype, data_format, [batch, *x.shape[1:]], kernel.shape,
                            strides, padding, dilation, output_lengths)
    with _lock:  # MirroredStrategy traces its replicas in threads: one tunes, all reuse
        decision = _memory.get(key)
        if decision is not None:
            decision = decision._replace(source="memory")
        else:
            decision = _cached(key) or _measure(
                key, dtype, timing_batch, x.shape[1:], kernel.shape, strides, padding,
                dilation, output_lengths, candidates, rule, batch is not None)
            _memory[key] = decision
    if recorder:
        recorder.decisions.append((tf.get_current_name_scope(), decision))
        if recorder.serving:
            return (decision.fastest_forward,) * 2
    return decision.forward, decision.gradient


def _multi_worker():
    """Whether the call is traced for several workers, which would each time it
    on their own machine: the static rule gives them all one answer."""
    if not tf.distribute.has_strategy():
        return False
    resolver = getattr(tf.distribute.get_strategy(), "cluster_resolver", None)
    if resolver is None:
        return False
    spec = resolver.cluster_spec().as_dict()
    return sum(len(tasks) for tasks in spec.values()) > 1


def measure(dtype, batch, spatial_and_channels, kernel_shape, strides, padding, dilation,
            output_lengths, candidates, proposal=None):
    """Times each of ``candidates`` on random data, fastest first.

    Returns ``{implementation: (forward_ms, gradient_ms)}`` as
    :func:`time_in_rounds` measures them; one that fails is left out. Runs
    eagerly, within about :data:`BUDGET_S` where the calls allow, less the
    time a pair would take to time (:func:`pair_seconds`) where
    ``proposal``, a function of such times to the (forward, gradient)
    lowerings to run (:func:`choose`), proposes one. The
    gradient is timed as a training step that returns the input and kernel
    gradients: no lowering's gradient reads its forward's output, so
    TensorFlow prunes the forward pass from that step (the batch is known
    here), and a training step takes the forward's time plus this one.
    """
    started = time.perf_counter()
    data, arguments = _setup(dtype, batch, spatial_and_channels, kernel_shape, strides,
                             padding, dilation, output_lengths)
    steps, traced = {}, {}
    for implementation in candidates:
        began = time.perf_counter()
        try:
            steps[implementation] = _calls(implementation, data, arguments)
        except (tf.errors.OpError, MemoryError) as error:
            _logger.info("tf_conv3dt auto: %s failed while being timed (%s); skipped",
                         implementation, str(error).splitlines()[0])
            continue
        traced[implementation] = time.perf_counter() - began
    budget = BUDGET_S - (time.perf_counter() - started)
    results = time_in_rounds(steps, budget, held_back=None if proposal is None else (
        lambda seconds: pair_seconds(seconds, traced, proposal)))
    return fastest_first({name: (forward * 1e3, gradient * 1e3)
                          for name, (forward, gradient) in results.items()})


def fastest_first(times):
    """``times`` ({name: (forward, gradient)}) ordered by forward plus
    gradient, as a decision lists them, whether measured or read back."""
    return dict(sorted(times.items(), key=lambda item: sum(item[1])))


def lowering_times(times):
    """The entries of ``times`` that time one lowering (not a pair's)."""
    return {name: ms for name, ms in times.items() if name in CANDIDATES}


def measure_split(dtype, batch, spatial_and_channels, kernel_shape, strides, padding,
                  dilation, output_lengths, pair, batch_known):
    """Milliseconds of the gradient of ``pair``, a (forward, gradient) pair
    of lowerings run together (``split.with_gradient_of``), traced as the
    call is: with its batch unknown unless ``batch_known``. There the
    gradient lowering's forward pass is pruned only in part (the gradients
    of its slices and pads read their inputs' shapes, which a static batch
    makes constants), so :func:`measure`'s times alone overrate a pair.
    Called eagerly, a pair runs all of that pass: the choice assumes a
    ``tf.function``, as Keras's training step is. None where it fails."""
    data, arguments = _setup(dtype, batch, spatial_and_channels, kernel_shape, strides,
                             padding, dilation, output_lengths)
    try:
        (gradient,) = _calls(tuple(pair), data, arguments, batch_known, ("gradient",))
        _warmed_up(gradient, time.perf_counter, _seconds(gradient, time.perf_counter))
        return min(primed_seconds(gradient) for _ in range(MIN_SAMPLES)) * 1e3
    except (tf.errors.OpError, MemoryError) as error:
        _logger.info("tf_conv3dt auto: %s failed while being timed (%s); not paired",
                     "+".join(pair), str(error).splitlines()[0])
        return None


def _setup(dtype, batch, spatial_and_channels, kernel_shape, strides, padding, dilation,
           output_lengths):
    """A configuration's random input, kernel and gradient from above, and
    its call's arguments."""
    data = tuple(tf.random.stateless_normal(shape, (0, seed), dtype=dtype) for seed, shape in (
        (0, (batch, *spatial_and_channels)), (1, kernel_shape),
        (2, (batch, *output_lengths, kernel_shape[3]))))
    return data, dict(strides=strides, padding=padding, dilation_rate=dilation,
                      output_shape=tuple(output_lengths))


def _calls(implementation, data, arguments, batch_known=True, steps=("forward", "gradient")):
    """Blocking calls of ``implementation`` on ``data`` (:func:`_setup`),
    one per step named in ``steps`` ("forward", "gradient"), each traced
    and run once, for a batch known or unknown at trace time. The
    gradient's call is a training step that returns the input and kernel
    gradients."""
    from tf_conv3dt import ops

    kernel = data[1]

    def forward(x, k):
        return ops.conv3d_transpose(x, k, implementation=implementation, **arguments)

    # The gradient arriving from the layers above is an argument, as in
    # training: a constant one (ones_like) lets TensorFlow fold parts of
    # the backward pass away, which ranked GEMM's training step up to 2x
    # too fast.
    def gradient(x, k, upstream):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            y = forward(x, k)
        return tape.gradient(y, [x, k], output_gradients=upstream)

    specs = [tf.TensorSpec([None, *t.shape[1:]] if t is not kernel and not batch_known
                           else t.shape, t.dtype) for t in data]
    calls = []
    for step in steps:
        function, arity = {"forward": (forward, 2), "gradient": (gradient, 3)}[step]
        concrete = tf.function(function, autograph=False).get_concrete_function(
            *specs[:arity])
        calls.append(functools.partial(concrete, *data[:arity]))
    for call in calls:  # trace and allocate
        _finish(call())
    return tuple(lambda call=call: _finish(call()) for call in calls)


WARMUP_CALLS = 3
"""Untimed calls of a step at most, after its trace, until two agree (:data:`STEADY`)."""
STEADY = 0.2
"""Two calls whose times differ by less than this fraction count as warmed up."""
MIN_SAMPLES = 3
"""Timed calls of each step that is not dropped, whatever the budget."""
MAX_SAMPLES = 7
"""Timed calls of each step where the budget allows."""

PAIR_RUNS = 1 + WARMUP_CALLS + 2 * MIN_SAMPLES
"""Runs of a pair's gradient :func:`measure_split` makes at most: its
trace's, the warm-up's and the primed samples'."""


def pair_seconds(seconds, traced, proposal):
    """Seconds :func:`measure_split` is expected to take on the pair that
    ``proposal`` (as :func:`measure` takes it) makes of ``seconds``
    (``{name: (forward_s, gradient_s)}``), 0 where it proposes one lowering:
    the slower of the two lowerings' traces (``traced``: seconds each took
    to trace, batch known, and run once), as the pair's gradient traces
    one's forward and the other's gradient, and :data:`PAIR_RUNS` of the
    gradient lowering's forward plus gradient, what the pair's gradient
    runs at most (that lowering's gradient, and where the batch is unknown
    part of its forward)."""
    forward, gradient = proposal({name: (f * 1e3, g * 1e3) for name, (f, g) in seconds.items()})
    if forward == gradient:
        return 0.0
    return max(traced[forward], traced[gradient]) + PAIR_RUNS * sum(seconds[gradient])


def time_in_rounds(steps, budget_s, clock=time.perf_counter, held_back=None):
    """Seconds of each ``steps`` entry's ``(forward, gradient)`` calls.

    ``steps`` maps a name to two blocking calls without arguments, in the
    order to try them (the likeliest winner first). Each call is first
    warmed up until two successive runs agree within :data:`STEADY` (at most
    :data:`WARMUP_CALLS` runs; a cold allocator or thread pool would rank a
    lowering by its first runs). A name whose forward, gradient and both
    together are already :data:`DROP_RATIO` times the best so far keeps
    those times and is not run again. Those within :data:`RACE_RATIO` of
    the best (over both calls, or in either one), where there are two or
    more, are timed in rounds of one :func:`primed_seconds` each, so that what else a shared
    machine runs weighs on all of them alike:
    :data:`MIN_SAMPLES` rounds, then more up to :data:`MAX_SAMPLES` while the
    next round fits in ``budget_s``, less what ``held_back`` (a function of
    the times so far, as returned) says a later step needs; the others keep
    their warm-up times.
    Returns ``{name: (forward_s, gradient_s)}``, the lowest time of each
    call, the statistic a busy machine's interruptions move least.
    """
    started = clock()
    warm, warmed, best = {}, [], [float("inf")] * 3  # forward, gradient, both
    for name, calls in steps.items():
        warm[name] = [_seconds(call, clock) for call in calls]
        if any(now <= DROP_RATIO * least for now, least in zip(
                (*warm[name], sum(warm[name])), best)):  # else dropped: not warmed up
            warm[name] = [_warmed_up(call, clock, first)
                          for call, first in zip(calls, warm[name])]
            warmed.append(name)
            best = [min(least, now) for now, least in zip((*warm[name], sum(warm[name])),
                                                         best)]
    best, fastest = best[2], best[:2]
    kept = [name for name in warmed if sum(warm[name]) <= RACE_RATIO * best
            or any(warm[name][call] <= RACE_RATIO * fastest[call] for call in (0, 1))]
    samples = {name: ([], []) for name in kept} if len(kept) > 1 else {}

    def lowest():
        return {name: tuple(min(times) for times in samples[name]) if name in samples
                else tuple(warm[name]) for name in steps}

    for round_ in range(MAX_SAMPLES if samples else 0):
        round_started = clock()
        for name in samples:
            for call, times in zip(steps[name], samples[name]):
                times.append(primed_seconds(call, clock))
        now = clock()
        if round_ + 1 >= MIN_SAMPLES and now + (now - round_started) - started > budget_s - (
                held_back(lowest()) if held_back else 0.0):
            break
    return lowest()


def _warmed_up(call, clock, last):
    """``call``'s time once two successive runs agree, or its last run's;
    ``last``: the time of the run just before."""
    for _ in range(WARMUP_CALLS - 1):
        now = _seconds(call, clock)
        steady = abs(now - last) <= STEADY * max(last, now)
        last = now
        if steady:
            break
    return last


def primed_seconds(call, clock=time.perf_counter):
    """Seconds of a run of ``call`` right after an untimed one: a call timed
    right after another function's ran up to 20% slower here (caches, and
    the allocator holding the other's buffer sizes), which would rank
    identical functions apart by their neighbours."""
    call()
    return _seconds(call, clock)


def _seconds(call, clock):
    started = clock()
    call()
    return clock() - started


def _on_a_fresh_thread(function, *args):
    """``function(*args)`` on a new thread, which starts eager, outside the
    caller's trace, tapes (tf.init_scope would stop every tape on this
    thread, the training step's too) and distribution strategy."""
    result = []

    def run():
        try:
            result.append((True, function(*args)))
        except BaseException as error:  # noqa: BLE001 - raised again on the caller's thread
            result.append((False, error))

    # Two fresh tf.functions per candidate read to TensorFlow as one function
    # retraced again and again, and it would warn so: quiet while timing.
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    thread = threading.Thread(target=run, name="tf_conv3dt-tuning")
    try:
        thread.start()
        thread.join()
    finally:
        tf_logger.setLevel(level)
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _finish(result):
    for tensor in tf.nest.flatten(result):
        tensor.numpy()


def _measure(key, dtype, batch, spatial_and_channels, kernel_shape, strides, padding,
             dilation, output_lengths, candidates, rule, batch_known):
    order = [rule, *[c for c in candidates if c != rule]] if rule in candidates else candidates
    started = time.perf_counter()
    spatial, output_lengths = timed_shape(batch, spatial_and_channels, kernel_shape, strides,
                                          output_lengths)
    configuration = (dtype, batch, (*spatial, spatial_and_channels[3]), kernel_shape, strides,
                     padding, dilation, output_lengths)
    on_a_block = spatial != tuple(spatial_and_channels[:3])

    def proposal(times):
        return choose(times, rule, ranked_gradients(times, on_a_block, kernel_shape, strides))

    times = _on_a_fresh_thread(measure, *configuration, order, proposal)
    gradients = ranked_gradients(times, on_a_block, kernel_shape, strides)
    forward, gradient = choose(times, rule, gradients)
    if gradient != forward:  # timed together, as the call traces them
        split = _on_a_fresh_thread(measure_split, *configuration, (forward, gradient),
                                   batch_known)
        alone = one_lowering(times, rule, gradients)
        if split is not None:
            times[f"{forward}+{gradient}"] = (times[forward][0], split)
        if split is None or not _pair_wins(times[forward][0] + split, sum(times[alone]),
                                           serves_faster=forward != alone):
            forward = gradient = alone
    decision = Decision(key, forward, gradient, fastest_first(times), batch, spatial,
                        time.perf_counter() - started, "measured")
    _logger.info(
        "tf_conv3dt auto: %s -> %s, timed at batch %d on input %s in %.2f s (forward + "
        "gradient ms: %s)%s", key, decision.runs(), batch, spatial, decision.seconds,
        ", ".join(f"{name} {f:.2f} + {t:.2f}" for name, (f, t) in decision.ms.items())
        or "none ran",
        decision.unranked)
    if times:
        _store(key, decision)
    return decision


def _pair_wins(pair_step, alone_step, serves_faster):
    """Whether a pair whose training step (forward plus gradient, timed
    together) takes ``pair_step`` beats the lowering fastest over both alone,
    whose step takes ``alone_step``: by more than :data:`RULE_MARGIN`, or
    where the pair's forward is the faster (``serves_faster``), within it."""
    if serves_faster:
        return pair_step <= (1 + RULE_MARGIN) * alone_step
    return alone_step > (1 + RULE_MARGIN) * pair_step


def ranked_gradients(times, on_a_block, kernel_shape, strides):
    """The lowerings of ``times`` whose timed gradient ranks them: all,
    but the native op where the configuration was timed on a block of its
    input (:func:`timed_shape`) and the kernel equals the stride.

    There the native op's gradient (oneDNN's) runs at a rate that drops
    with size, and the block ranks it ahead of where it runs: in the six
    block-against-whole runs of 2026-12-03 (benchmarks/results/tuning/
    block_*: oneDNN with AVX-512 in float32 and bfloat16, and held to
    AVX2), on both such cases of each, its gradient was 1.10-1.77x the
    fastest other lowering's on the block and 1.48-3.87x at the whole
    size, always further behind, while its forward was within 10% of the
    fastest on the block and 5% at the whole size. Where noise put it first
    on the block, tuning took it and trained 1.63-1.67x behind our fastest
    lowering (two benchmark runs of that day). It still runs as a pair's
    forward."""
    if on_a_block and choice.kernel_relation(kernel_shape[:3], strides) == "kernel == stride":
        return [name for name in times if name != "native"] or list(times)
    return list(times)


def one_lowering(times, rule, gradients=None):
    """The lowering of ``times`` fastest over forward plus gradient (a
    training step), or ``rule``'s choice where it is within
    :data:`RULE_MARGIN` of that; among ``gradients`` (default all), those
    whose gradient may run (:func:`ranked_gradients`)."""
    able = list(times) if gradients is None else gradients
    best = min(able, key=lambda name: sum(times[name]))
    return rule if rule in able and sum(times[rule]) <= (1 + RULE_MARGIN) * sum(
        times[best]) else best


def choose(times, rule, gradients=None):
    """``(forward, gradient)``, the lowerings ``times`` ({name: (forward ms,
    gradient ms)}) says to run, ``(rule, rule)`` where none was timed.

    The forward is :func:`one_lowering`'s where its forward pass is within
    :data:`RULE_MARGIN` of the fastest, else the fastest. The gradient is
    the fastest of ``gradients`` (default all: :func:`ranked_gradients`)
    where it makes the training step (forward plus gradient) faster than
    the forward's own gradient by more than :data:`RULE_MARGIN`, else the
    forward's own, where that is one of them. A pair is estimated from
    the times alone: :func:`_measure` times it as the call runs it before
    it keeps it, and else runs :func:`one_lowering`'s.

    One lowering for both passes ran up to 1.2x behind the fastest forward
    where another had the fastest gradient (benchmarks/results/: on oneDNN,
    the sub-pixel forward against the native op's)."""
    if not times:
        return rule, rule
    able = list(times) if gradients is None else gradients
    forward = one_lowering(times, rule, able)
    fastest = min(times, key=lambda name: times[name][0])
    if times[forward][0] > (1 + RULE_MARGIN) * times[fastest][0]:
        forward = fastest
    gradient = min(able, key=lambda name: times[name][1])
    own, best = (times[forward][0] + times[name][1] for name in (forward, gradient))
    return forward, forward if forward in able and own <= (1 + RULE_MARGIN) * best \
        else gradient


def _load(path):
    """The cache file's decisions by key, or {} where it is missing, unreadable,
    corrupt or written for another environment (logged)."""
    try:
        with open(path) as f:
            content = json.load(f)
        if content.get("format") != FORMAT:
            _logger.warning("tf_conv3dt auto: %s has format %r, not %d; not used", path,
                            content.get("format"), FORMAT)
            return {}
        if content.get("environment") != environment():
            _logger.warning("tf_conv3dt auto: %s is for another environment; not used", path)
            return {}
        decisions = {}
        for key, entry in content["choices"].items():
            for role in ("forward", "gradient"):
                if entry[role] not in CANDIDATES:
                    raise ValueError(f"a choice names no lowering: {entry[role]!r}")
            times = {name: tuple(map(float, ms)) for name, ms in entry["ms"].items()}
            decisions[key] = Decision(key, entry["forward"], entry["gradient"],
                fastest_first(times), int(entry["batch"]),
                tuple(map(int, entry["spatial"])), float(entry["seconds"]), "cache")
        return decisions
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        _logger.warning("tf_conv3dt auto: ignoring the tuning cache %s (%s: %s)", path,
                        type(error).__name__, error)
        return {}


def _cached(key):
    return _load(cache_path()).get(key)


def _store(key, decision):
    """Adds ``decision`` to the cache file: merged under an exclusive lock with
    what other processes wrote, written to a temporary file and renamed over
    the old one, so a reader sees the old file or the new one, never a part."""
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with _file_lock(path + ".lock"):
            choices = {k: d._asdict() for k, d in _load(path).items()}
            choices[key] = decision._asdict()
            for entry in choices.values():
                del entry["key"], entry["source"]
            fd, temporary = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".auto-",
                                             suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"format": FORMAT, "environment": environment(),
                               "choices": choices}, f, indent=1, sort_keys=True)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise
    except OSError as error:
        _logger.warning("tf_conv3dt auto: could not write the tuning cache %s (%s); the "
                        "choice is kept for this process only", path, error.strerror or error)


@contextlib.contextmanager
def _file_lock(path):
    if fcntl is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def forget():
    """Empties the in-memory choices (the cache file stays), as a new process starts."""
    with _lock:
        _memory.clear()
