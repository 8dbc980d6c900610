"""Measured "auto" (tf_conv3dt/ops/tuning/): what it times and how, and what it chooses.

Also when it must not measure: switched off, under op determinism, or where
the timing would not stand for the run.
"""

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import cpu_pin
import reference
from markers import cpu_sensitive, op_only
from tf_conv3dt import ops, shapes
from tf_conv3dt.ops import lowerings, tuning
from tf_conv3dt.ops.tuning import measure, peak, policy
from tuning_calls import CALL, KERNEL, SHAPE, call_inputs, run_auto, static_call, timed_here


def _tuned(candidates, rule, **call):
    """The (forward, gradient) lowerings tuning runs for a static call, or
    ``(rule, rule)`` where it does not time it."""
    timed = tuning.tuned(static_call(**call), [lowerings.get(name) for name in candidates],
                         lowerings.get(rule))
    return (rule, rule) if timed is None else (timed[0].name, timed[1].name)


@op_only
@cpu_sensitive
def test_times_every_lowering_logs_once_and_runs_the_winner(tuning_on, measurements, caplog,
                                                           monkeypatch):
    """Under oneDNN on AMX, pinned: every lowering is a candidate there."""
    cpu_pin.pin(monkeypatch, "onednn", "amx")
    x, kernel = call_inputs()
    with caplog.at_level(logging.INFO, logger="tf_conv3dt"):
        y = run_auto(x, kernel)
        run_auto(x, kernel)
    assert len(measurements) == 1
    lines = [r.getMessage() for r in caplog.records if "tf_conv3dt auto:" in r.getMessage()]
    assert len(lines) == 1, lines
    (decision,) = tuning.current_cache().memory.values()
    # Each lowering, and a pair where one was proposed ("forward+gradient").
    timed = tuning.lowering_times(decision.ms)
    assert set(timed) == set(timed_here())
    rule = ops.resolve_implementation("auto", (3, 3, 3), (2, 2, 2), "float32")
    forward, gradient = policy.choose(timed, rule)
    assert set(decision.ms) - set(timed) <= {f"{forward}+{gradient}"}, decision.ms
    # The pair, or where it was timed together and lost, the one lowering.
    assert (decision.forward, decision.gradient) in (
        (forward, gradient), (policy.one_lowering(timed, rule),) * 2), decision
    assert decision.batch == SHAPE[0]
    for name in decision.ms:
        assert name in lines[0]
    assert f"-> {decision.runs()}," in lines[0]
    # What runs is the forward lowering itself, and it is exact.
    forced = ops.conv3d_transpose(x, kernel, implementation=decision.forward, **CALL)
    np.testing.assert_array_equal(y.numpy(), forced.numpy())
    expected = reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 2), padding="same")
    reference.assert_close(y, expected)


class _Clock:
    """A clock that only the fake calls below move."""

    def __init__(self):
        self.now, self.log = 0.0, []

    def __call__(self):
        return self.now

    def call(self, name, seconds):
        """A call named ``name`` whose n-th run takes ``seconds[n]`` (the last
        one from then on)."""
        runs = iter(seconds)
        last = [None]

        def run():
            last[0] = next(runs, last[0])
            self.now += last[0]
            self.log.append(name)

        return run


def _timings(clock, times, budget_s=2.0, held_back=None):
    steps = {name: (clock.call(f"{name}.f", f), clock.call(f"{name}.t", t))
             for name, (f, t) in times.items()}
    return tuning.Timer(clock).rounds(steps, budget_s, held_back)


@op_only
def test_timing_warms_up_until_steady_and_ranks_by_the_lowest_warm_time():
    clock = _Clock()
    # "cold" is slowest on its first runs (allocator, thread pool) and fastest
    # warm; "warm" is steady from the start; a one-off stall hits "warm" once.
    result = _timings(clock, {"cold": ([9.0, 0.5, 0.1], [9.0, 0.5, 0.2]),
                              "warm": ([0.15] * 5 + [5.0, 0.15], [0.3])})
    assert result == {"cold": pytest.approx((0.1, 0.2)), "warm": pytest.approx((0.15, 0.3))}
    # A first run of each call, then warm-up: three runs for cold, two for
    # warm (its first two agree).
    assert clock.log[:10] == ["cold.f", "cold.t", "cold.f", "cold.f", "cold.t", "cold.t",
                              "warm.f", "warm.t", "warm.f", "warm.t"]


@op_only
def test_timing_interleaves_rounds_and_takes_three_to_seven_samples():
    for budget_s, rounds in ((0.0, policy.KNOBS.min_samples), (1e9, policy.KNOBS.max_samples)):
        clock = _Clock()
        _timings(clock, {"a": ([0.1], [0.2]), "b": ([0.11], [0.2])}, budget_s)
        timed = clock.log[8:]  # after each call's two warm-up runs
        # Each timed run right after an untimed one of the same call.
        assert timed == ["a.f", "a.f", "a.t", "a.t", "b.f", "b.f", "b.t", "b.t"] * rounds, (
            budget_s, timed)


@op_only
def test_rounds_leave_the_budget_a_later_step_is_held_back_for():
    """Two candidates' warm-up takes 1.2 s, and each round 1.2 s until a's
    forward speeds up to 0.05 s in the fourth: a 7.2 s budget fits five
    rounds, and with 1 s of it held back for a pair's timing, four."""
    seen = []

    def held_back(seconds):
        seen.append(seconds)
        return 1.0

    times = {"a": ([0.1] * 8 + [0.05], [0.2]), "b": ([0.1], [0.2])}
    for held, rounds in ((None, 5), (held_back, 4)):
        clock = _Clock()
        result = _timings(clock, times, 7.2, held)
        assert len(clock.log[8:]) == 8 * rounds, (held, clock.log[8:])
    # Asked after each round from the third, with each candidate's lowest so far.
    assert seen == [{"a": pytest.approx((0.1, 0.2)), "b": pytest.approx((0.1, 0.2))},
                    {"a": pytest.approx((0.05, 0.2)), "b": pytest.approx((0.1, 0.2))}]
    assert seen[-1] == result


@op_only
def test_a_pair_is_expected_to_take_the_slower_trace_and_its_runs():
    traced = {"native": 0.05, "gemm": 0.4, "subpixel": 0.3}
    seconds = {"native": (0.002, 0.006), "gemm": (0.004, 0.003), "subpixel": (0.005, 0.004)}
    # The slower trace, and runs of the gradient lowering's forward plus gradient.
    assert measure.pair_seconds(seconds, traced, lambda ms: ("native", "gemm")) == (
        pytest.approx(0.4 + policy.KNOBS.pair_runs * 0.007))
    assert measure.pair_seconds(seconds, traced, lambda ms: ("gemm", "native")) == (
        pytest.approx(0.4 + policy.KNOBS.pair_runs * 0.008))
    assert measure.pair_seconds(seconds, traced, lambda ms: ("gemm", "gemm")) == 0.0
    # The proposal sees milliseconds, as measure returns them.
    asked = []
    measure.pair_seconds(seconds, traced, lambda ms: asked.append(ms) or ("gemm", "gemm"))
    assert asked == [{name: (f * 1e3, t * 1e3) for name, (f, t) in seconds.items()}]


@op_only
def test_timing_drops_a_candidate_three_times_slower_than_the_best_so_far():
    clock = _Clock()
    result = _timings(clock, {"fast": ([0.1], [0.1]), "slow": ([0.31], [0.31]),
                              "close": ([0.1], [0.15]), "behind": ([0.2], [0.2])})
    assert clock.log.count("slow.f") == clock.log.count("slow.t") == 1
    assert result["slow"] == pytest.approx((0.31, 0.31))
    # Within RACE_RATIO of the best: timed in rounds.
    assert clock.log.count("close.f") == 2 + 2 * policy.KNOBS.min_samples
    # Twice the best once warm: its warm-up times stand, without rounds.
    assert clock.log.count("behind.f") == 2
    assert result["behind"] == pytest.approx((0.2, 0.2))


@op_only
def test_timing_keeps_a_candidate_far_behind_over_both_with_the_fastest_gradient():
    """3.5x the best over both calls, but the fastest gradient, which
    :func:`tuning.choose` may pair with another's forward."""
    clock = _Clock()
    result = _timings(clock, {"fast": ([0.1], [0.1]), "gradient": ([0.65], [0.05])})
    assert clock.log.count("gradient.t") == 2 + 2 * policy.KNOBS.min_samples
    assert result["gradient"] == pytest.approx((0.65, 0.05))


@op_only
def test_timing_takes_no_rounds_when_one_candidate_is_left():
    clock = _Clock()
    result = _timings(clock, {"fast": ([0.1], [0.1]), "behind": ([0.2], [0.2])})
    assert clock.log == ["fast.f", "fast.t", "fast.f", "fast.t",
                         "behind.f", "behind.t", "behind.f", "behind.t"]
    assert result == {"fast": pytest.approx((0.1, 0.1)), "behind": pytest.approx((0.2, 0.2))}


@op_only
@pytest.mark.parametrize("times", [{"fast": ([0.12], [0.1]), "behind": ([0.1], [0.5])},
                                   {"fast": ([0.1], [0.12]), "behind": ([0.5], [0.1])}])
def test_timing_times_the_fastest_forward_and_gradient_in_rounds(times):
    """Behind over both calls, but the fastest forward pass or the fastest
    gradient (:func:`tuning.choose` takes each): timed in rounds with the best."""
    clock = _Clock()
    _timings(clock, times)
    assert clock.log.count("behind.f") == 2 + 2 * policy.KNOBS.min_samples


def test_a_block_s_peak_is_its_resident_growth():
    """What the tune command's measured column reads: 64 MiB written in a
    block is its peak, and a block that allocates nothing has next to none."""
    peak.trim()
    with peak.PeakMemory() as memory:
        block = np.ones(8 * 2**20)  # 64 MiB of float64
    assert 60 * 2**20 <= memory.peak < 96 * 2**20, memory.peak / 2**20
    del block
    peak.trim()
    with peak.PeakMemory() as idle:
        pass
    assert idle.peak < 8 * 2**20, idle.peak / 2**20


@op_only
def test_the_timed_training_step_takes_its_upstream_gradient_as_an_argument(monkeypatch):
    """A constant upstream gradient (ones_like) lets TensorFlow fold parts of
    the backward pass away, which timed GEMM's training step up to 2x too
    fast: the step is traced with the input, the kernel and a random
    gradient of the output's shape as its arguments, as training runs it."""
    steps = {}

    def spy(timer, timed, budget_s, held_back):
        steps.update(timed)
        assert held_back is None  # no proposal: nothing to hold back for
        return {name: (1.0, 1.0) for name in timed}

    monkeypatch.setattr(tuning.Timer, "rounds", spy)
    _, peaks = measure.lowerings(static_call(strides=(2, 1, 1), output=(8, 5, 3)), ("gemm",))
    assert list(peaks) == ["gemm"] and peaks["gemm"] >= 0, peaks
    gradient = steps["gemm"][1].__defaults__[0]  # the step's functools.partial
    x, kernel, upstream = gradient.args
    assert upstream.shape == (2, 8, 5, 3, KERNEL[3])
    assert len(gradient.func.inputs) == 3
    assert 0.5 < float(tf.math.reduce_std(upstream)) < 2.0


@op_only
@pytest.mark.parametrize("times, chosen", [
    # The forward: gemm's 2.0 ms against the rule's subpixel at 2.1 (within 5%) or 2.2.
    ({"gemm": (2.0, 3.0), "subpixel": (2.1, 3.0)}, ("subpixel", "subpixel")),
    ({"gemm": (2.0, 3.0), "subpixel": (2.2, 3.0)}, ("gemm", "gemm")),
    # The gradient: a training step of 2.0 + 3.0 against 2.0 + 2.8 (within 5%) or 2.7.
    ({"gemm": (2.0, 3.0), "native": (9.0, 2.8)}, ("gemm", "gemm")),
    ({"gemm": (2.0, 3.0), "native": (9.0, 2.7)}, ("gemm", "native")),
    # The rule's forward with another's gradient.
    ({"subpixel": (2.0, 9.0), "native": (3.0, 2.0), "gemm": (4.0, 4.0)},
     ("subpixel", "native")),
    # The rule's forward is within 5%, but gemm's is faster and so is its
    # training step: gemm alone, not the rule's forward with gemm's gradient.
    ({"subpixel": (2.09, 5.0), "gemm": (2.0, 3.0)}, ("gemm", "gemm")),
    # The rule fastest over both, its forward 10% behind native's: native's
    # forward with the rule's gradient.
    ({"subpixel": (2.2, 3.0), "native": (2.0, 4.0)}, ("native", "subpixel")),
    ({}, ("subpixel", "subpixel")),
])
def test_choose_takes_the_fastest_forward_and_gradient_beyond_the_margin(times, chosen):
    assert policy.choose(times, "subpixel") == chosen


@op_only
def test_a_split_choice_runs_one_lowerings_forward_with_anothers_gradient(tuning_on,
                                                                          monkeypatch):
    """Measured with native's forward and GEMM's gradient fastest: the
    forward pass is native's graph, the gradients GEMM's (no Conv3DBackprop*
    op in the traced step), and both are exact."""
    monkeypatch.setattr(measure, "lowerings", lambda *args: ({
        "gemm": (2.0, 3.0), "native": (1.0, 9.0), "subpixel": (3.0, 3.5)}, {}))
    monkeypatch.setattr(measure, "pair", lambda *args: 3.1)
    x, kernel = call_inputs()
    cotangent = np.random.default_rng(1).standard_normal(
        (SHAPE[0], 8, 10, 6, KERNEL[3])).astype("float32")

    @tf.function
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = ops.conv3d_transpose(x, kernel, implementation="auto", **CALL)
        return [y, *tape.gradient(y, [x, kernel], output_gradients=cotangent)]

    static = step.get_concrete_function(tf.constant(x), tf.constant(kernel))
    (decision,) = tuning.current_cache().memory.values()
    assert (decision.forward, decision.gradient) == ("native", "gemm")
    assert decision.ms["native+gemm"] == (1.0, 3.1)
    assert decision.runs() == "native with gemm's gradient"
    expected = reference.np_conv3d_transpose_with_gradients(
        x, kernel, cotangent, strides=(2, 2, 2), padding="same")
    unknown_batch = step.get_concrete_function(tf.TensorSpec([None, *SHAPE[1:]]),
                                               tf.TensorSpec(KERNEL))
    for concrete in (static, unknown_batch):
        names = _op_types(concrete.graph)
        assert "Conv3DBackpropInputV2" in names and not {
            "Conv3D", "Conv3DBackpropFilterV2"} & names, names
        y, dx, dkernel = concrete(tf.constant(x), tf.constant(kernel))
        for ours, theirs in zip((y, dx, dkernel), expected):
            reference.assert_close(ours, theirs)


@op_only
@pytest.mark.parametrize("split_ms", [5.0, None])
def test_a_pair_slower_as_the_call_traces_it_gives_way_to_one_lowering(
        tuning_on, monkeypatch, split_ms):
    """The times alone propose native's forward with GEMM's gradient; timed
    together with the batch unknown, as a Keras model's graph traces them,
    they take 1.0 + 5.0 ms (or fail) against native's own 1.0 + 5.0: GEMM
    runs alone, the fastest over forward plus gradient (2.0 + 3.0)."""
    monkeypatch.setattr(measure, "lowerings", lambda *args: ({
        "gemm": (2.0, 3.0), "native": (1.0, 5.0), "subpixel": (3.0, 3.5)}, {}))
    timed = []
    monkeypatch.setattr(measure, "pair", lambda *args: timed.append(args) or split_ms)
    x, kernel = call_inputs()
    function = tf.function(lambda x: ops.conv3d_transpose(x, kernel, **CALL))
    function.get_concrete_function(tf.TensorSpec([None, *SHAPE[1:]]))
    (decision,) = tuning.current_cache().memory.values()
    assert (decision.forward, decision.gradient) == ("gemm", "gemm")
    ((*_, pair, batch_known),) = timed
    assert pair == ("native", "gemm") and batch_known is False
    assert ("native+gemm" in decision.ms) == (split_ms is not None)


@op_only
def test_a_pair_is_timed_as_the_call_traces_it(monkeypatch):
    """measure_split runs the pair's gradient alone, traced with the batch
    unknown where the call's is, and times it in milliseconds."""
    traced = []
    calls = measure._calls

    def spy(implementation, data, arguments, batch_known, steps):
        made = calls(implementation, data, arguments, batch_known, steps)
        traced.append((implementation, steps,
                       made[0].__defaults__[0].func.inputs[0].shape[0]))
        return made

    monkeypatch.setattr(measure, "_calls", spy)
    for batch_known in (True, False):
        ms = measure.pair(static_call(), ("subpixel", "native"), batch_known)
        assert 0 < ms < 1e4, ms
    assert traced == [(("subpixel", "native"), ("gradient",), 2),
                      (("subpixel", "native"), ("gradient",), None)]


@op_only
@cpu_sensitive
@pytest.mark.parametrize("split_ms, chosen", [(4.0, ("native", "gemm")),
                                              (4.3, ("gemm", "gemm"))])
def test_a_pair_is_kept_against_the_lowering_fastest_over_both(tuning_on, monkeypatch,
                                                               split_ms, chosen):
    """Native's forward (1.0 ms) with GEMM's gradient, timed together at
    4.0 (a 5.0 ms step) or 4.3 (5.3 ms), against GEMM alone (5.0 ms): kept
    within 5% of it, else GEMM runs alone, though the pair beats native's
    own 10.0 ms either way. Under oneDNN, pinned: without it the native op
    is not a candidate (``Lowering.untimed``)."""
    cpu_pin.pin(monkeypatch, "onednn", "avx512")
    monkeypatch.setattr(measure, "lowerings", lambda *args: ({
        "gemm": (2.0, 3.0), "native": (1.0, 9.0)}, {}))
    monkeypatch.setattr(measure, "pair", lambda *args: split_ms)
    assert _tuned(["gemm", "native"], "gemm") == chosen


@pytest.mark.parametrize("times, rule, chosen", [
    ({"gemm": (2.0, 3.0), "native": (1.0, 4.2)}, "native", "native"),  # within 5%
    ({"gemm": (2.0, 3.0), "native": (1.0, 4.5)}, "native", "gemm"),
    ({"gemm": (2.0, 3.0), "native": (1.0, 4.2)}, "subpixel", "gemm"),  # the rule untimed
])
def test_one_lowering_is_the_fastest_over_both_or_the_rule_within_the_margin(times, rule,
                                                                            chosen):
    assert policy.one_lowering(times, rule) == chosen


def _op_types(graph):
    """Every op type in ``graph`` and the functions it calls (custom gradients')."""
    found = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():
        found |= {node.op for node in function.definition.node_def}
    return found


@op_only
@cpu_sensitive
def test_a_served_call_takes_the_fastest_forward(tuning_on, monkeypatch):
    """Training takes the rule's subpixel forward, within 5% of native's and
    with the faster training step, and GEMM's gradient; serving, native's
    forward, the fastest, alone. Under oneDNN, pinned, where native is a
    candidate."""
    cpu_pin.pin(monkeypatch, "onednn", "avx512")
    monkeypatch.setattr(measure, "lowerings", lambda *args: ({
        "gemm": (2.0, 3.0), "native": (1.0, 9.0), "subpixel": (1.04, 3.5)}, {}))
    monkeypatch.setattr(measure, "pair", lambda *args: 3.1)
    for serving, expected in ((False, ("subpixel", "gemm")), (True, ("native", "native"))):
        tuning.forget()
        with tuning.recording(serving=serving):
            chosen = _tuned(lowerings.names(auto=True), "subpixel")
        assert chosen == expected
        (decision,) = tuning.current_cache().memory.values()
        assert decision.runs(serving) == (
            "native (fastest forward)" if serving else "subpixel with gemm's gradient")


@op_only
@pytest.mark.parametrize("switch", ["env", "python"])
def test_switched_off_the_rule_decides(tuning_on, measurements, monkeypatch, switch):
    if switch == "env":
        monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    else:
        tuning.set_autotune(False)
    assert not ops.autotune_enabled()
    x, kernel = call_inputs()
    run_auto(x, kernel)
    assert not measurements and not tuning.current_cache().memory
    assert not os.path.exists(tuning.current_cache().path)


@cpu_sensitive
@pytest.mark.parametrize("configuration, isa, dtype, gpu, by_default", [
    ("eigen", "avx2", "float32", False, True), ("eigen", "amx", "float32", False, True),
    ("eigen", "avx2", "bfloat16", False, False), ("onednn", "avx2", "float32", False, False),
    ("onednn", "avx512", "float32", False, False), ("onednn", "amx", "float32", False, True),
    ("onednn", "amx", "bfloat16", False, False), ("onednn", "amx", "float32", True, False)])
def test_tuning_is_on_by_default_only_where_it_beat_the_rule(
        monkeypatch, configuration, isa, dtype, gpu, by_default):
    """Unset, it times in float32 with the Eigen kernels and under oneDNN on
    AMX, where tuned auto beat the rule (docs/performance.md), and nowhere
    else: not under oneDNN on AVX2 or AVX-512, not in bfloat16, not on a GPU."""
    cpu_pin.pin(monkeypatch, configuration, isa, gpu)
    tuning.set_autotune(None)
    for value in (None, ""):
        if value is None:
            monkeypatch.delenv(tuning.ENV_AUTOTUNE, raising=False)
        else:
            monkeypatch.setenv(tuning.ENV_AUTOTUNE, value)
        assert tuning.autotune_enabled(dtype) is by_default, value


@cpu_sensitive
@pytest.mark.parametrize("value, enabled", [
    (" Yes ", True), ("1", True), ("0", False), ("OFF", False), ("false", False)])
@pytest.mark.parametrize("configuration, isa, gpu", [
    ("eigen", "avx2", False), ("onednn", "avx512", False), ("onednn", "amx", True)])
def test_the_environment_switches_tuning_whatever_the_default(
        monkeypatch, value, enabled, configuration, isa, gpu):
    cpu_pin.pin(monkeypatch, configuration, isa, gpu)
    tuning.set_autotune(None)
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, value)
    assert tuning.autotune_enabled() is enabled and tuning.autotune_enabled("bfloat16") is enabled


def test_a_bad_environment_switch_is_named(monkeypatch):
    tuning.set_autotune(None)
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "sometimes")
    with pytest.raises(ValueError, match="TF_CONV3DT_AUTOTUNE='sometimes'"):
        tuning.autotune_enabled()


@op_only
def test_the_python_switch_wins_over_the_environment(tuning_on, measurements, monkeypatch):
    monkeypatch.setenv(tuning.ENV_AUTOTUNE, "0")
    tuning.set_autotune(True)
    run_auto(*call_inputs())
    assert len(measurements) == 1
    with pytest.raises(TypeError, match="enabled='yes'"):
        tuning.set_autotune("yes")


@op_only
def test_op_determinism_turns_tuning_off(tuning_on):
    script = textwrap.dedent("""
        import numpy as np, tensorflow as tf
        from tf_conv3dt import ops
        from tf_conv3dt.ops import tuning
        tuning.set_autotune(True)
        tf.config.experimental.enable_op_determinism()
        x = np.ones((2, 4, 4, 4, 2), "float32"); k = np.ones((3, 3, 3, 3, 2), "float32")
        ops.conv3d_transpose(x, k, strides=2, padding="same")
        assert not ops.autotune_enabled() and not tuning.current_cache().memory
        print("rule")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "rule", result.stderr[-2000:]


@op_only
def test_unknown_spatial_sizes_take_the_rule_and_an_unknown_batch_the_nominal_one(
        tuning_on, measurements):
    x, kernel = call_inputs()
    spatial_unknown = tf.function(lambda x: ops.conv3d_transpose(x, kernel, **CALL))
    spatial_unknown.get_concrete_function(tf.TensorSpec([None, None, None, None, 2]))
    assert not measurements and not tuning.current_cache().memory
    batch_unknown = tf.function(lambda x: ops.conv3d_transpose(x, kernel, **CALL))
    concrete = batch_unknown.get_concrete_function(tf.TensorSpec([None, *SHAPE[1:]]))
    (decision,) = tuning.current_cache().memory.values()
    assert decision.batch == policy.KNOBS.nominal_batch
    assert decision.key[2][0] is None
    forced = ops.conv3d_transpose(x, kernel, implementation=decision.forward, **CALL)
    np.testing.assert_allclose(concrete(tf.constant(x)).numpy(), forced.numpy(), rtol=0,
                               atol=1e-6)


def _knobs(monkeypatch, **changes):
    """Tuning's knobs, ``changes`` made, for the test."""
    monkeypatch.setattr(policy, "KNOBS", dataclasses.replace(policy.KNOBS, **changes))


def _as_on_a_cpu(monkeypatch, configuration="onednn"):
    """Tuning as on a CPU of ``configuration`` (oneDNN's with AVX-512, or
    Eigen's), where blocks are timed, whatever this machine is."""
    cpu_pin.pin(monkeypatch, configuration, "avx512")


@op_only
def test_a_channels_first_call_describes_its_own_input(tuning_on, measurements):
    """The key holds the input channels last, whatever the layout: a call
    timed at its own size names no block, and its input as the caller has it."""
    x, kernel = call_inputs()
    run_auto(np.transpose(x, (0, 4, 1, 2, 3)), kernel, data_format="channels_first")
    (decision,) = tuning.current_cache().memory.values()
    line = decision.describe()
    assert decision.spatial == SHAPE[1:4] and " on (" not in line, line
    given = (SHAPE[4], *SHAPE[1:4])  # as the caller lays it out
    assert f"channels_first input {given} at batch {SHAPE[0]}," in line, line


@cpu_sensitive
@op_only
@pytest.mark.parametrize("padding, kernel_size, strides, dilation, output_padding", [
    ("same", 3, 2, 1, None), ("valid", 3, 2, 1, None), ("valid", 1, 2, 1, None),
    ("same", 4, 2, 1, 1), ("valid", 2, 1, 2, None), ("same", 3, (2, 1, 3), 1, None)])
def test_a_large_configuration_is_timed_on_a_block_of_its_input(
        monkeypatch, padding, kernel_size, strides, dilation, output_padding):
    """Its output lengths are the ones the block's own call computes, so the
    block keeps the configuration's padding."""
    kernel_size, strides = (kernel_size,) * 3, strides if isinstance(strides, tuple) else (
        strides,) * 3
    whole, kernel = (64, 40, 9), (*kernel_size, 16, 32)
    output = [shapes.output_length(n, k, s, padding, output_padding, dilation)
              for n, k, s in zip(whole, kernel_size, strides)]
    _as_on_a_cpu(monkeypatch)
    products = 2 * 32 * 16 * np.prod(kernel_size)  # per input voxel, at batch 2
    for limit, block in ((products * 16 * 20 * 9, (16, 20, 9)),  # longest axis first
                         (products * 64 * 40 * 9, whole), (1, (8, 8, 8))):  # none below 8
        _knobs(monkeypatch, max_timed_products=limit)
        spatial, timed_output = measure.timed_shape(2, (*whole, 32), kernel, strides, output)
        assert spatial == block
        assert timed_output == tuple(
            shapes.output_length(n, k, s, padding, output_padding, dilation)
            for n, k, s in zip(spatial, kernel_size, strides))


@cpu_sensitive
def test_on_a_gpu_every_call_is_timed_at_its_size_with_every_lowering(monkeypatch):
    """Neither the block nor leaving out the native op was measured on a GPU."""
    cpu_pin.pin(monkeypatch, "eigen", "avx2", gpu=True)
    output = (128, 128, 128)
    assert measure.timed_shape(1, (64, 64, 64, 32), (3, 3, 3, 16, 32), (2, 2, 2),
                              output) == ((64, 64, 64), output)
    assert timed_here() == list(lowerings.names(auto=True))


@cpu_sensitive
@op_only
def test_a_call_timed_on_a_block_says_so_and_runs_its_winner(tuning_on, measurements,
                                                              monkeypatch, caplog):
    _as_on_a_cpu(monkeypatch)
    _knobs(monkeypatch, max_timed_products=2 * 8 * 9 * 5 * 2 * 3 * 27)
    x, kernel = call_inputs((2, 16, 9, 5, 2))
    with caplog.at_level(logging.INFO, logger="tf_conv3dt"):
        y = run_auto(x, kernel)
    ((timed, *_),) = measurements
    assert timed.input_shape[1:] == (8, 9, 5, 2) and timed.output_lengths == (16, 18, 10)
    (decision,) = tuning.current_cache().memory.values()
    assert decision.spatial == (8, 9, 5)
    assert "on (8, 9, 5)," in decision.describe()
    assert any("on input (8, 9, 5)" in r.getMessage() for r in caplog.records)
    tuning.forget()  # the cache keeps the block
    run_auto(x, kernel)
    assert next(iter(tuning.current_cache().memory.values())).spatial == (8, 9, 5)
    reference.assert_close(y, reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 2),
                                                            padding="same"))


@pytest.mark.parametrize("times, chosen", [
    # Native's forward the fastest: a pair, with the fastest ranked gradient.
    ({"native": (1.0, 2.0), "gemm": (2.0, 3.0), "subpixel": (2.1, 3.5)}, ("native", "gemm")),
    # Native's forward within the margin: the ranked lowering alone.
    ({"native": (1.98, 1.0), "gemm": (2.0, 3.0)}, ("gemm", "gemm")),
    # Only native was timed (the others failed): it runs.
    ({"native": (1.0, 2.0)}, ("native", "native")),
])
def test_choose_takes_a_gradient_only_from_the_ranked_lowerings(times, chosen):
    call = static_call(kernel=(2, 2, 2, 3, 2))
    gradients = policy.ranked_gradients(times, call, on_a_block=True)
    assert policy.choose(times, "subpixel", gradients) == chosen


@cpu_sensitive
@op_only
@pytest.mark.parametrize("kernel_size, on_a_block, split_ms, chosen", [
    (2, True, 3.0, ("native", "gemm")),  # kernel == stride on a block: a pair's forward only
    (2, True, None, ("gemm", "gemm")),  # the pair failed: the fastest ranked lowering
    (2, False, 3.0, ("native", "native")),  # at its own size its gradient ranks
    (3, True, 3.0, ("native", "native")),  # overlapping: the block ranks it as the whole does
])
def test_a_block_does_not_rank_the_native_gradient_where_kernel_equals_stride(
        tuning_on, monkeypatch, caplog, kernel_size, on_a_block, split_ms, chosen):
    """oneDNN's gradient of the native op for kernel == stride loses rate
    as the input grows, so a block ranks it ahead of where it runs
    (``Lowering.ranked_on_a_block``): there native's forward, the fastest, pairs
    with GEMM's gradient, the fastest of the others, or where that pair
    fails, GEMM runs alone; the log line and the tune command's row say so."""
    _as_on_a_cpu(monkeypatch)
    _knobs(monkeypatch, max_timed_products=1 if on_a_block else float("inf"))
    monkeypatch.setattr(measure, "lowerings", lambda *args: ({
        "native": (1.0, 2.0), "gemm": (2.0, 3.0), "subpixel": (2.1, 3.5)}, {}))
    monkeypatch.setattr(measure, "pair", lambda *args: split_ms)
    with caplog.at_level(logging.INFO, logger="tf_conv3dt"):
        runs = _tuned(lowerings.names(auto=True), "subpixel", shape=(2, 16, 16, 16, 2),
                      kernel=(kernel_size,) * 3 + (3, 2), padding="valid")
    assert runs == chosen
    (decision,) = tuning.current_cache().memory.values()
    assert (decision.spatial == (8, 8, 8)) == on_a_block
    (line,) = [r.getMessage() for r in caplog.records if "tf_conv3dt auto:" in r.getMessage()]
    note = "; native's gradient not ranked on a block"
    unranked = on_a_block and kernel_size == 2
    assert line.endswith(note) == unranked, line
    assert decision.describe().endswith(note) == unranked, decision.describe()


@cpu_sensitive
@op_only
@pytest.mark.parametrize("configuration, timed", [
    ("onednn", {"native", "gemm", "subpixel"}), ("eigen", {"gemm", "subpixel"})])
def test_without_onednn_the_native_op_is_not_timed(tuning_on, measurements, monkeypatch,
                                                   configuration, timed):
    """Eigen's Conv3DBackprop* kernels, which the native op runs without
    oneDNN, collapse at batch > 1 and keep no steady rate at batch 1: the
    rule never takes them there, and tuning does not time them."""
    _as_on_a_cpu(monkeypatch, configuration)
    x, kernel = call_inputs()
    y = run_auto(x, kernel)
    (args,) = measurements
    assert set(args[-2]) == timed  # the candidates, before the proposal
    (decision,) = tuning.current_cache().memory.values()
    assert set(tuning.lowering_times(decision.ms)) == timed
    reference.assert_close(y, reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 2),
                                                            padding="same"))


@op_only
def test_xla_traces_a_tuned_call(tuning_on, measurements):
    x, kernel = call_inputs()
    y = tf.function(lambda x: ops.conv3d_transpose(x, kernel, **CALL), jit_compile=True)(x)
    assert len(measurements) == 1
    reference.assert_close(y, reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 2),
                                                            padding="same"))


MIRRORED = textwrap.dedent("""
    import random, threading
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_conv3dt
    from tf_conv3dt.ops import tuning
    from tf_conv3dt.ops.tuning import measure
    tuning.set_autotune(True)
    # Each timing ranks the lowerings at random: only a single timing shared
    # by every replica gives them one lowering.
    timings = []
    def lowerings(*args):  # the configuration, the candidates, the proposal
        timings.append(args)
        forward, gradient = list(args[-2]), list(args[-2])
        random.shuffle(forward); random.shuffle(gradient)
        return ({name: (1.0 + forward.index(name), 1.0 + gradient.index(name))
                 for name in forward}, {})
    measure.lowerings = lowerings
    measure.pair = lambda *args: random.choice([0.5, None])  # a pair kept, or not
    chosen = []
    tuned = tuning.tuned
    def recorded(*args):
        forward, gradient, _ = tuned(*args)
        chosen.append((threading.get_ident(), (forward.name, gradient.name)))
        return forward, gradient, _
    tuning.tuned = recorded
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        layer = tf_conv3dt.Conv3DTranspose(3, 3, strides=2, padding="same")
        layer.build((None, 4, 4, 4, 2))
    @tf.function
    def step(x):
        def replica(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(layer(x) ** 2)
            return tape.gradient(loss, layer.trainable_variables)
        return strategy.run(replica, args=(x,))
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(np.ones((4, 4, 4, 4, 2), "float32")).batch(4))
    step(next(iter(data)))
    assert len(timings) == 1, timings
    assert len({thread for thread, _ in chosen}) == 2, chosen
    assert len({winner for _, winner in chosen}) == 1, chosen
    print(*chosen[0][1])
""")


@op_only
def test_every_mirrored_replica_takes_the_same_lowering(tuning_on):
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert set(result.stdout.split()) <= set(lowerings.names(auto=True)), result.stdout
