"""The registry of lowerings: one registered from outside the library joins
every list of lowerings, with no library file edited."""

import pytest
import tensorflow as tf

import lowerings as test_lowerings
import reference
import tf_conv3dt
from markers import op_only
from test_differential import SEED, check_config, draw_config, implementations
from tf_conv3dt.export import cli
from tf_conv3dt.ops import lowerings, select, tuning
from tf_conv3dt.ops.dilation import dilated_as_undilated
from tf_conv3dt.ops.lowerings import Lowering
from tf_conv3dt.ops.lowerings.gemm import _unreached_zeros
from tf_conv3dt.ops.lowerings.native import empty_batch_safe
from tf_conv3dt.ops.tuning import measure


class UpsampleThenConvolve(Lowering):
    """The textbook transposed convolution: the input spread out by the
    stride with zeros between, padded by the kernel's length less one and
    convolved (stride 1) with the kernel reversed, then the call's window of
    that full output. Its zeros cost stride**3 times the products: a toy,
    and exact. With an empty batch oneDNN's conv3d may return a wrong shape,
    so, as the library's lowerings do, it returns zeros for a batch known
    to be empty and puts its convolution through ``empty_batch_safe``. It
    counts its forward passes."""

    name = "toy_upsample_convolve"

    def __init__(self):
        self.forwards = 0

    def forward(self, x, kernel, plan, call, epilogue=None):
        self.forwards += 1
        return dilated_as_undilated(_full_then_window, x, kernel, plan, call.strides,
                                    call.padding, call.dilation), False


def _full_then_window(x, kernel, plan, strides):
    for axis, stride in enumerate(strides, start=1):
        x = _spread(x, axis, stride)
    taps = kernel.shape[:3]
    if x.shape[0] == 0:  # known empty: zeros, with zero gradients
        return _unreached_zeros(x, kernel, [0, *plan.output_lengths, kernel.shape[3]])
    padded = tf.pad(x, [[0, 0], *[[k - 1, k - 1] for k in taps], [0, 0]])
    flipped = tf.transpose(tf.reverse(kernel, axis=[0, 1, 2]), (0, 1, 2, 4, 3))
    shape = tf.shape(padded)
    full = empty_batch_safe(tf.nn.conv3d(padded, flipped, (1, 1, 1, 1, 1), "VALID"),
                            tf.stack([shape[0], *[shape[axis] - k + 1 for axis, k in
                                                  enumerate(taps, start=1)],
                                      kernel.shape[3]]))
    starts = [first * s + begin for first, s, begin in
              zip(plan.first_block, strides, plan.crop_begin)]
    lengths = tf.shape(full)[1:4]
    after = [tf.maximum(start + out - lengths[axis], 0) for axis, (start, out) in
             enumerate(zip(starts, plan.output_lengths))]
    full = tf.pad(full, [[0, 0], *[[0, a] for a in after], [0, 0]])
    return tf.slice(full, [0, *starts, 0], [-1, *plan.output_lengths, -1])


def _spread(x, axis, stride):
    """``x`` with ``stride - 1`` zeros between its positions along ``axis``."""
    if stride == 1:
        return x
    shape = tf.shape(x)
    zeros = tf.zeros(tf.concat([shape[:axis + 1], [stride - 1], shape[axis + 1:]], 0), x.dtype)
    spread = tf.concat([tf.expand_dims(x, axis + 1), zeros], axis + 1)
    merged = tf.concat([shape[:axis], [shape[axis] * stride], shape[axis + 1:]], 0)
    size = tf.concat([shape[:axis], [(shape[axis] - 1) * stride + 1], shape[axis + 1:]], 0)
    return tf.slice(tf.reshape(spread, merged), tf.zeros_like(shape), size)


@pytest.fixture
def toy():
    """The toy lowering, registered for one test (each xdist worker is a
    process of its own, and the next test finds the registry as it was)."""
    with lowerings.registered(UpsampleThenConvolve()) as lowering:
        yield lowering
    assert lowering.name not in lowerings.names()


@op_only
@pytest.mark.parametrize("seed", [SEED + i for i in range(4)], ids=lambda s: f"seed={s}")
def test_the_differential_suite_checks_a_registered_lowering(toy, seed):
    """In the random configurations' list, and right on them (values and
    gradients against the reference, every call mode)."""
    assert toy.name in implementations(seed) and toy.name in test_lowerings.names()
    check_config(draw_config(seed), seed, [toy.name])
    assert toy.forwards


def test_forced_implementation_and_the_layer_take_a_registered_lowering(toy, rng):
    x = rng.standard_normal((2, 3, 4, 2, 3)).astype("float32")
    layer = tf_conv3dt.Conv3DTranspose(2, 3, 2, padding="same", use_bias=False)
    with tf_conv3dt.forced_implementation(toy.name):
        y = layer(x)
    assert toy.forwards == 1
    reference.assert_close(y, reference.np_conv3d_transpose(
        x, layer.kernel.numpy(), strides=(2, 2, 2), padding="same"))
    asked = tf_conv3dt.Conv3DTranspose(2, 3, 2, padding="same", implementation=toy.name)
    asked(x)
    assert toy.forwards == 2 and asked.get_config()["implementation"] == toy.name


def test_the_export_command_offers_a_registered_lowering(toy, tmp_path):
    args = cli.parse_args(["--out", str(tmp_path), "--implementation", toy.name])
    assert args.implementation == toy.name


def test_the_export_command_refuses_a_lowering_no_longer_registered(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["--out", str(tmp_path), "--implementation", UpsampleThenConvolve.name])
    assert "invalid choice" in capsys.readouterr().err


@op_only
def test_tuning_times_a_registered_lowering_and_runs_it_where_it_wins(toy, monkeypatch,
                                                                      tmp_path, rng):
    monkeypatch.setenv(tuning.ENV_CACHE_DIR, str(tmp_path))
    candidates = []

    def timed(call, names, proposal=None):
        candidates.extend(names)
        return {name: (0.5, 0.5) if name == toy.name else (1.0, 1.0) for name in names}, {}

    monkeypatch.setattr(measure, "lowerings", timed)
    tuning.forget()
    x = rng.standard_normal((2, 3, 4, 2, 3)).astype("float32")
    kernel = rng.standard_normal((3, 3, 3, 2, 3)).astype("float32")
    try:
        with tuning.switched(True):
            y = tf_conv3dt.conv3d_transpose(x, kernel, strides=2, padding="same")
    finally:
        tuning.forget()
    assert toy.name in candidates and toy.forwards == 1
    reference.assert_close(y, reference.np_conv3d_transpose(x, kernel, strides=(2, 2, 2),
                                                            padding="same"))


def test_the_registry_refuses_a_second_lowering_of_a_name_and_auto():
    with pytest.raises(ValueError, match="'gemm' is already registered"):
        lowerings.register(lowerings.get("gemm").__class__())
    auto = UpsampleThenConvolve()
    auto.name = "auto"
    with pytest.raises(ValueError, match="'auto'"):
        lowerings.register(auto)
    with pytest.raises(TypeError, match="a Lowering"):
        lowerings.register("gemm")


def test_auto_picks_among_the_lowerings_that_allow_it():
    """GEMM's int8 form is registered, and never "auto"'s choice."""
    assert "gemm_int8" in lowerings.names()
    assert lowerings.names(auto=True) == ("native", "gemm", "subpixel")
    assert select.normalised("GEMM_INT8") is lowerings.get("gemm_int8")
