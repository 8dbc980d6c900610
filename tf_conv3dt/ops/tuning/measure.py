"""The measurement: each candidate's forward pass and gradient, and a pair's, on random data."""

import dataclasses
import functools
import logging
import math
import threading
import time

import tensorflow as tf

from tf_conv3dt.ops import cpu
from tf_conv3dt.ops.tuning import peak, policy
from tf_conv3dt.ops.tuning.timer import Timer

_logger = logging.getLogger("tf_conv3dt")


def timed_shape(batch, input_shape, kernel_shape, strides, output_lengths):
    """The input's spatial lengths and the output lengths a configuration is
    timed at: its own, or on a CPU, where one forward pass takes more than
    ``Knobs.max_timed_products`` multiply-adds, a block of the input halved
    along its longest axis until it does not (no axis below
    ``Knobs.min_timed_length``), with each output length shortened by the
    stride times what its input lost, which keeps the padding.

    oneDNN's kernels, and the GEMMs and forward convolutions of the other
    lowerings, run at a steady rate per product on such sizes, so the block
    ranks the lowerings as the whole does (``Knobs.max_timed_products``) in
    a fraction of the time, but for those whose gradient a block misranks
    (``Lowering.ranked_on_a_block``). Eigen's Conv3DBackprop* kernels, which
    the native op runs without oneDNN, do not (``Lowering.untimed``). On a
    GPU (not measured) every call is timed at its size."""
    knobs = policy.KNOBS
    spatial = list(input_shape[:3])
    if not cpu.on_a_gpu():
        per_voxel = batch * input_shape[3] * kernel_shape[3] * math.prod(kernel_shape[:3])
        while (per_voxel * math.prod(spatial) > knobs.max_timed_products
               and max(spatial) > knobs.min_timed_length):
            axis = spatial.index(max(spatial))
            spatial[axis] = max(knobs.min_timed_length, -(-spatial[axis] // 2))
    output = [length - (whole - timed) * stride for length, whole, timed, stride in
              zip(output_lengths, input_shape[:3], spatial, strides)]
    return tuple(spatial), tuple(output)


def timed_call(call, batch):
    """``call`` (static but perhaps for its batch) as it is timed: at
    ``batch``, on the block :func:`timed_shape` gives."""
    spatial, output = timed_shape(batch, call.input_shape[1:], call.kernel_shape,
                                  call.strides, call.output_lengths)
    return dataclasses.replace(call, input_shape=(batch, *spatial, call.input_shape[4]),
                               output_lengths=output)


def lowerings(call, candidates, proposal=None, timer=None):
    """Times each of ``candidates`` (names) on random data for ``call`` (its
    batch known), fastest first.

    Returns ``({name: (forward_ms, gradient_ms)}, {name: peak MiB})``: the
    times as ``Timer.rounds`` measures them, and each training step's
    resident-memory growth, run once after its trace (``peak``: a lower
    bound, None where it cannot be read); one that fails is left out. Runs eagerly, within about
    ``Knobs.budget_s`` where the calls allow, less the time a pair would
    take to time (:func:`pair_seconds`) where ``proposal``, a function of
    such times to the (forward, gradient) lowerings to run
    (``policy.choose``), proposes one. The gradient is timed as a training
    step that returns the input and kernel gradients: no lowering's gradient
    reads its forward's output, so TensorFlow prunes the forward pass from
    that step (the batch is known here), and a training step takes the
    forward's time plus this one.
    """
    from tf_conv3dt.ops.tuning.decision import fastest_first

    timer = timer or Timer()
    started = time.perf_counter()
    data, arguments = _setup(call)
    steps, traced, peaks = {}, {}, {}
    for implementation in candidates:
        began = time.perf_counter()
        try:
            steps[implementation] = _calls(implementation, data, arguments)
            traced[implementation] = time.perf_counter() - began
            peak.trim()  # what the trace freed, and the previous candidate
            with peak.PeakMemory() as memory:
                steps[implementation][1]()
        except (tf.errors.OpError, MemoryError) as error:
            _logger.info("tf_conv3dt auto: %s failed while being timed (%s); skipped",
                         implementation, str(error).splitlines()[0])
            steps.pop(implementation, None)
            continue
        peaks[implementation] = None if memory.peak is None else memory.peak / 2**20
    budget = policy.KNOBS.budget_s - (time.perf_counter() - started)
    results = timer.rounds(steps, budget, held_back=None if proposal is None else (
        lambda seconds: pair_seconds(seconds, traced, proposal)))
    return (fastest_first({name: (forward * 1e3, gradient * 1e3)
                           for name, (forward, gradient) in results.items()}),
            {name: peaks[name] for name in results})


def pair_seconds(seconds, traced, proposal):
    """Seconds :func:`pair` is expected to take on the pair that ``proposal``
    (as :func:`lowerings` takes it) makes of ``seconds`` (``{name:
    (forward_s, gradient_s)}``), 0 where it proposes one lowering: the
    slower of the two lowerings' traces (``traced``: seconds each took to
    trace, batch known, and run once), as the pair's gradient traces one's
    forward and the other's gradient, and ``Knobs.pair_runs`` of the
    gradient lowering's forward plus gradient, what the pair's gradient runs
    at most (that lowering's gradient, and where the batch is unknown part
    of its forward)."""
    forward, gradient = proposal({name: (f * 1e3, g * 1e3) for name, (f, g) in seconds.items()})
    if forward == gradient:
        return 0.0
    return max(traced[forward], traced[gradient]) + policy.KNOBS.pair_runs * sum(
        seconds[gradient])


def pair(call, names, batch_known, timer=None):
    """Milliseconds of the gradient of ``names``, a (forward, gradient) pair
    of lowerings run together (``split.with_gradient_of``), traced as the
    call is: with its batch unknown unless ``batch_known``. There the
    gradient lowering's forward pass is pruned only in part (the gradients
    of its slices and pads read their inputs' shapes, which a static batch
    makes constants), so :func:`lowerings`' times alone overrate a pair.
    Called eagerly, a pair runs all of that pass: the choice assumes a
    ``tf.function``, as Keras's training step is. None where it fails."""
    timer = timer or Timer()
    data, arguments = _setup(call)
    try:
        (gradient,) = _calls(tuple(names), data, arguments, batch_known, ("gradient",))
        timer.warmed_up(gradient, timer.seconds(gradient))
        return min(timer.primed(gradient) for _ in range(policy.KNOBS.min_samples)) * 1e3
    except (tf.errors.OpError, MemoryError) as error:
        _logger.info("tf_conv3dt auto: %s failed while being timed (%s); not paired",
                     "+".join(names), str(error).splitlines()[0])
        return None


def _setup(call):
    """A call's random input, kernel and gradient from above, and its
    arguments to ``conv3d_transpose``."""
    batch, *spatial_and_channels = call.input_shape
    kernel_shape = call.kernel_shape
    data = tuple(tf.random.stateless_normal(shape, (0, seed), dtype=call.dtype)
                 for seed, shape in ((0, (batch, *spatial_and_channels)), (1, kernel_shape),
                                     (2, (batch, *call.output_lengths, kernel_shape[3]))))
    return data, dict(strides=call.strides, padding=call.padding,
                      dilation_rate=call.dilation, output_shape=tuple(call.output_lengths))


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
    gpu = cpu.on_a_gpu()  # asked once, not in every timed call
    for call in calls:  # trace and allocate
        _finish(call(), gpu)
    return tuple(lambda call=call: _finish(call(), gpu) for call in calls)


def _finish(result, gpu):
    """Returns once ``result`` is computed. On a CPU a function's eager call
    returns only then; on a ``gpu`` it waits for the kernels. Reading the
    tensors (``.numpy()``) would copy them into the measured peak: one
    output more in a forward pass, an input gradient more in a training
    step."""
    del result
    if gpu:
        tf.test.experimental.sync_devices()


def on_a_fresh_thread(function, *args):
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
