"""The memory budget "auto" keeps to: its switches, their errors, and what it makes auto choose."""

import logging

import pytest
import tensorflow as tf

import cpu_pin
from markers import cpu_sensitive, op_only
from reference import assert_close, np_conv3d_transpose_with_gradients
from tf_conv3dt import ops
from tf_conv3dt.ops import budget, lowerings, select
from tf_conv3dt.ops.call import Call

MIB = 2**20


@pytest.fixture(autouse=True)
def _no_budget(monkeypatch):
    monkeypatch.delenv(budget.ENV_MEMORY_BUDGET, raising=False)
    ops.set_memory_budget(None)
    budget._logged.clear()
    yield
    ops.set_memory_budget(None)


def _call(shape=(1, 64, 64, 64, 32), filters=16, kernel=3, strides=2, padding="same"):
    return Call.of(shape, (kernel,) * 3 + (filters, shape[-1]), "float32", (strides,) * 3,
                   padding, None, (1, 1, 1), "channels_last", None, 1)


@pytest.mark.parametrize("value, expected", [
    (1000, 1000), ("1000", 1000), ("512MiB", 512 * MIB), (" 1.5 GiB ", 3 * 2**29),
    ("2GB", 2 * 10**9), ("64 kib", 64 * 1024), ("7b", 7)])
def test_a_budget_is_bytes_or_a_number_with_a_unit(value, expected):
    ops.set_memory_budget(value)
    assert ops.memory_budget() == expected


@pytest.mark.parametrize("value", [0, -5, True, 1.5, "lots", "5 parsecs", "", "-1MiB",
                                   "0.1", "nan"])
def test_a_bad_budget_is_named_with_its_value(value):
    with pytest.raises(ValueError, match=f"budget={value!r}".replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.")):
        ops.set_memory_budget(value)


def test_the_environment_variable_sets_it_and_a_bad_value_names_the_variable(monkeypatch):
    monkeypatch.setenv(budget.ENV_MEMORY_BUDGET, "3 MiB")
    assert ops.memory_budget() == 3 * MIB
    ops.set_memory_budget("1MiB")  # the Python switch wins
    assert ops.memory_budget() == MIB
    ops.set_memory_budget(None)
    monkeypatch.setenv(budget.ENV_MEMORY_BUDGET, "big")
    with pytest.raises(ValueError, match="TF_CONV3DT_MEMORY_BUDGET='big'"):
        ops.memory_budget()


def test_no_budget_by_default():
    assert ops.memory_budget() is None


def test_every_auto_lowering_estimates_a_static_call_and_not_an_unknown_one():
    call = _call()
    for name in lowerings.names(auto=True):
        estimate = lowerings.get(name).memory(call)
        assert isinstance(estimate, int) and estimate > sum(call.sizes()[:2]), name
        assert lowerings.get(name).memory(_call(shape=(1, None, 64, 64, 32))) is None


@cpu_sensitive
def test_auto_takes_the_smallest_lowering_that_fits_where_the_rule_s_does_not(monkeypatch):
    """Eigen's rule takes GEMM where the kernel is shorter than the stride; a
    budget under its estimate and over another's makes auto take the
    smallest that fits, and say why."""
    cpu_pin.pin(monkeypatch, "eigen", "avx2")
    call = _call(kernel=1)
    rule_choice = select.select(call, "auto").forward
    estimates = {name: lowerings.get(name).memory(call) for name in lowerings.names(auto=True)}
    fits = {name: size for name, size in estimates.items() if size < estimates[rule_choice.name]}
    assert fits, estimates
    ops.set_memory_budget(max(fits.values()))
    chosen = select.select(call, "auto")
    assert chosen.forward.name == min(fits, key=fits.get), (chosen, estimates)
    assert "memory budget" in chosen.why
    assert select.select(call, rule_choice).forward is rule_choice  # asked for: kept


@cpu_sensitive
def test_where_nothing_fits_auto_takes_the_smallest_and_logs_once(monkeypatch, caplog):
    cpu_pin.pin(monkeypatch, "eigen", "avx2")
    call = _call()
    estimates = {name: lowerings.get(name).memory(call) for name in lowerings.names(auto=True)}
    ops.set_memory_budget(1)
    with caplog.at_level(logging.WARNING, logger="tf_conv3dt"):
        for _ in range(2):
            assert select.select(call, "auto").forward.name == min(estimates, key=estimates.get)
    assert len([r for r in caplog.records if "memory budget" in r.getMessage()]) == 1


@op_only
@cpu_sensitive
def test_a_budgeted_auto_call_stays_exact(monkeypatch, rng):
    """The budget changes which lowering runs, not the values or gradients
    (the NumPy loop reference's, in float64)."""
    cpu_pin.pin(monkeypatch, "eigen", "avx2")
    x = rng.standard_normal((1, 5, 4, 6, 3))
    kernel = rng.standard_normal((3, 3, 3, 2, 3))
    cotangent = rng.standard_normal((1, 10, 8, 12, 2))
    ops.set_memory_budget(1)
    xt, kt = tf.constant(x), tf.constant(kernel)
    with tf.GradientTape() as tape:
        tape.watch([xt, kt])
        y = ops.conv3d_transpose(xt, kt, strides=2, padding="same")
    dx, dk = tape.gradient(y, [xt, kt], output_gradients=tf.constant(cotangent))
    expected, expected_dx, expected_dk = np_conv3d_transpose_with_gradients(
        x, kernel, cotangent, strides=(2, 2, 2), padding="same")
    for actual, wanted in ((y, expected), (dx, expected_dx), (dk, expected_dk)):
        assert_close(actual.numpy(), wanted, rel=1e-10)
