"""Tuning's knobs in one record, and the policy that turns timings into a choice."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Knobs:
    """Every setting of tuning; :data:`KNOBS` holds the ones in use."""

    nominal_batch: int = 2
    """The batch a configuration whose batch is unknown is timed at: the
    smallest above 1, because TensorFlow's Eigen Conv3DBackprop* kernels are
    fast at batch 1 only (30-100x slower above it), and a ranking taken at
    batch 1 would pick the native op for training it then runs slowly;
    larger batches scale every lowering's GEMMs alike and cost more tuning
    time."""
    budget_s: float = 2.0
    """Time one configuration's timing runs may take, tracing included, and
    the timing of a proposed pair (``measure.pair_seconds``) with them."""
    drop_ratio: float = 3.0
    """A candidate this many times slower than the best so far, in its
    forward pass, in its gradient and over both, is not timed again."""
    race_ratio: float = 1.5
    """A warmed-up candidate this many times slower than the best over
    forward plus gradient, in its forward pass alone and in its gradient
    alone (:func:`choose` takes each from its fastest) is not timed in
    rounds: rounds separate close candidates, and warm-up times ran up to
    about 20% above the rounds' lowest here, so this margin leaves none
    behind that could win."""
    rule_margin: float = 0.05
    """A candidate replaces the rule's choice only when faster than it by
    more than this fraction: closer timings are within this machine's
    noise, and the rule comes from many benchmark runs."""
    max_timed_products: float = 2**28
    """Multiply-adds of one forward pass (batch x input voxels x channels x
    filters per group x kernel taps) above which a configuration is timed
    on a smaller block of its input on a CPU (``measure.timed_shape``).
    Timed at their own size, the benchmark's six cases above it took
    1.8-22.7 s to tune on a 2-core AVX-512 EPYC
    (benchmarks/bench_tuning_block.py: oneDNN in float32 and bfloat16,
    oneDNN held to AVX2, Eigen); on the block, 0.8-2.3 s, and the block's
    choice (one lowering, before tuning paired forwards and gradients) ran
    within 1.12x of the whole size's fastest over forward plus training
    step, its fastest forward within 1.28x. ``float("inf")`` times every
    configuration at its own size."""
    min_timed_length: int = 8
    """A spatial length ``measure.timed_shape`` does not halve below."""
    warmup_calls: int = 3
    """Untimed calls of a step at most, after its trace, until two agree (:attr:`steady`)."""
    steady: float = 0.2
    """Two calls whose times differ by less than this fraction count as warmed up."""
    min_samples: int = 3
    """Timed calls of each step that is not dropped, whatever the budget."""
    max_samples: int = 7
    """Timed calls of each step where the budget allows."""

    @property
    def pair_runs(self):
        """Runs of a pair's gradient ``measure.pair`` makes at most: its
        trace's, the warm-up's and the primed samples'."""
        return 1 + self.warmup_calls + 2 * self.min_samples


KNOBS = Knobs()


def ranked_gradients(times, call, on_a_block):
    """The lowerings of ``times`` whose timed gradient ranks them for
    ``call``: all, but where it was timed on a block of its input, those
    whose gradient a block misranks (``Lowering.ranked_on_a_block``)."""
    from tf_conv3dt.ops import lowerings

    if on_a_block:
        return [name for name in times
                if lowerings.get(name).ranked_on_a_block(call)] or list(times)
    return list(times)


def one_lowering(times, rule, gradients=None):
    """The lowering of ``times`` fastest over forward plus gradient (a
    training step), or ``rule``'s choice where it is within
    :attr:`Knobs.rule_margin` of that; among ``gradients`` (default all),
    those whose gradient may run (:func:`ranked_gradients`)."""
    able = list(times) if gradients is None else gradients
    best = min(able, key=lambda name: sum(times[name]))
    return rule if rule in able and sum(times[rule]) <= (1 + KNOBS.rule_margin) * sum(
        times[best]) else best


def choose(times, rule, gradients=None):
    """``(forward, gradient)``, the lowerings ``times`` ({name: (forward ms,
    gradient ms)}) says to run, ``(rule, rule)`` where none was timed.

    The forward is :func:`one_lowering`'s where its forward pass is within
    :attr:`Knobs.rule_margin` of the fastest, else the fastest. The gradient
    is the fastest of ``gradients`` (default all: :func:`ranked_gradients`)
    where it makes the training step (forward plus gradient) faster than
    the forward's own gradient by more than the margin, else the forward's
    own, where that is one of them. A pair is estimated from the times
    alone: tuning times it as the call runs it before it keeps it
    (``measure.pair``), and else runs :func:`one_lowering`'s.

    One lowering for both passes ran up to 1.2x behind the fastest forward
    where another had the fastest gradient (benchmarks/results/: on oneDNN,
    the sub-pixel forward against the native op's)."""
    if not times:
        return rule, rule
    margin = 1 + KNOBS.rule_margin
    able = list(times) if gradients is None else gradients
    forward = one_lowering(times, rule, able)
    fastest = min(times, key=lambda name: times[name][0])
    if times[forward][0] > margin * times[fastest][0]:
        forward = fastest
    gradient = min(able, key=lambda name: times[name][1])
    own, best = (times[forward][0] + times[name][1] for name in (forward, gradient))
    return forward, forward if forward in able and own <= margin * best else gradient


def pair_wins(pair_step, alone_step, serves_faster):
    """Whether a pair whose training step (forward plus gradient, timed
    together) takes ``pair_step`` beats the lowering fastest over both alone,
    whose step takes ``alone_step``: by more than the rule margin, or where
    the pair's forward is the faster (``serves_faster``), within it."""
    margin = 1 + KNOBS.rule_margin
    if serves_faster:
        return pair_step <= margin * alone_step
    return alone_step > margin * pair_step
