"""The sub-pixel lowering: each stride phase as a stride-1 forward convolution."""

import itertools

import tensorflow as tf

from tf_conv3dt.ops import cpu
from tf_conv3dt.ops.dilation import dilated_as_undilated
from tf_conv3dt.ops.lowerings import Lowering, register
from tf_conv3dt.ops.lowerings.gemm import unrolled_refusal
from tf_conv3dt.ops.lowerings.native import empty_batch_safe
from tf_conv3dt.ops.plan import interleave_and_crop, lengths


class Subpixel(Lowering):
    """Every stride phase as a stride-1 forward ``tf.nn.conv3d`` of the
    input with that phase's taps, the phases interleaved like the GEMM
    lowering's (:func:`subpixel`); its custom gradients are forward
    convolutions and GEMMs. Dilation goes through the same space-to-batch
    split as the native op."""

    name = "subpixel"

    def refuses(self, call):
        return unrolled_refusal(call, self.name)

    def forward(self, x, kernel, plan, call, epilogue=None):
        return dilated_as_undilated(subpixel, x, kernel, plan, call.strides, call.padding,
                                    call.dilation), False

    def memory(self, call):
        """Outputs' worth, from the peaks of bench_memory.py's cases on the
        AVX2-only EPYC: where the kernel equals the stride (one tap a phase)
        3.1 under Eigen and 3.8 under oneDNN, elsewhere 3.8 and 6.0 (k2 s2,
        k3 s2, k4 s2: 3.1, 3.7 and 3.8 under Eigen; 3.8, 4.9 and 6.0 under
        oneDNN, whose convolution with every phase's filters holds its output
        more than once)."""
        sizes = call.sizes()
        if sizes is None:
            return None
        one_tap_a_phase = call.relation == "kernel == stride"
        if cpu.onednn_enabled():
            return int((3.8 if one_tap_a_phase else 6.0) * sizes[1])
        return int((3.1 if one_tap_a_phase else 3.8) * sizes[1])


def subpixel(x, kernel, plan, strides):
    """Sub-pixel form: every stride phase as a stride-1 forward convolution.

    Along one axis, output block ``b`` of phase ``r`` is ``sum_m x[b - m] *
    kernel[r + m * s]`` over the phase's ``T_r = ceil((k - r) / s)`` taps: a
    "full" correlation of the input with that phase's taps, reversed, read
    from the input padded (or cut) to the plan's window of blocks. When every
    kernel length is a multiple of its stride, all phases have the same taps
    and run as one ``tf.nn.conv3d`` with ``s1*s2*s3*F`` output channels;
    otherwise each phase is its own convolution (padding the short phases
    with zero taps would cost their products, and turn an Inf input into NaN
    where 0 * Inf lands). The phases are then interleaved as in the GEMM
    lowering. Gradients (:func:`_conv3d_valid`, :func:`_phase_by_phase`) are
    forward convolutions and one GEMM per tap: training never reaches the
    Conv3DBackprop* kernels.
    """
    kernel_size, filters, channels = tuple(kernel.shape[:3]), kernel.shape[3], kernel.shape[4]
    batch = lengths(x)[0]
    longest = [-(-k // s) for k, s in zip(kernel_size, strides)]
    # Block b of the window [first, n + extra) reads inputs b - T + 1 .. b.
    amounts = [(t - 1 - f, e) for t, f, e in zip(longest, plan.first_block, plan.extra_blocks)]
    x = _cut(x, amounts)
    paddings = [[max(before, 0), max(after, 0)] for before, after in amounts]
    if all(k % s == 0 for k, s in zip(kernel_size, strides)):
        # (kd, kh, kw, F, C) -> (T1, s1, T2, s2, T3, s3, F, C) -> (T1, T2, T3, C, s1*s2*s3*F).
        weights = tf.reshape(kernel, [longest[0], strides[0], longest[1], strides[1],
                                      longest[2], strides[2], filters, channels])
        weights = tf.transpose(weights, (0, 2, 4, 7, 1, 3, 5, 6))
        weights = _reversed(tf.reshape(weights, [*longest, channels, -1]))
        return interleave_and_crop(_conv3d_valid(x, weights, paddings), batch, plan,
                                   strides, filters)
    return _phase_by_phase(x, kernel, plan, strides, paddings, longest)


def _phase_by_phase(x, kernel, plan, strides, paddings, longest):
    """The output where the phases' taps differ: each phase its own
    convolution, reading from the window the plan's ``paddings`` make of
    ``x`` (a phase with ``T_r`` taps starts ``T - T_r`` positions later; one
    with none is zero), the phases then interleaved.

    Its gradient goes phase by phase, each phase waiting for the one before:
    the output gradient's positions of that phase (:func:`_phase_view`), its
    share of the window gradient, added to the sum, and one ``(F, voxels) x
    (voxels, C)`` GEMM per tap. The peak holds the output gradient, the sum
    and one phase's temporaries, where autodiff through the interleave held
    the output gradient padded, transposed and split, and every phase's
    window gradient at once: a training step of the k3 s2 U-Net stage, (1,
    64^3, 32) -> 16, peaked at 470 MiB, against 893 before and PyTorch's 430
    (bench_memory.py, AVX2-only EPYC, Eigen), and ran in 0.87-0.92 of the
    time."""
    kernel_size, filters, channels = tuple(kernel.shape[:3]), kernel.shape[3], kernel.shape[4]
    phases = list(itertools.product(*map(range, strides)))
    taps = {phase: [-(-(k - r) // s) for k, r, s in zip(kernel_size, phase, strides)]
            for phase in phases}
    ones = (1, 1, 1, 1, 1)

    def phase_kernel(kernel, phase):  # (T1, T2, T3, F, C)
        return kernel[phase[0]::strides[0], phase[1]::strides[1], phase[2]::strides[2]]

    @tf.custom_gradient
    def interleaved(x, kernel):
        batch, blocks = lengths(x)[0], plan.blocks()
        # Every phase reads this window, so it must not be a Pad (_pad).
        window = _pad(x, paddings, fusable=False)
        outputs = []
        for phase in phases:
            if 0 in taps[phase]:  # a kernel shorter than its stride: no tap lands here
                outputs.append(tf.zeros(tf.stack([batch, *blocks, filters]), x.dtype))
                continue
            weights = _reversed(tf.transpose(phase_kernel(kernel, phase), (0, 1, 2, 4, 3)))
            cut = _cut(window, [(t - t_max, 0) for t, t_max in zip(taps[phase], longest)])
            outputs.append(empty_batch_safe(tf.nn.conv3d(cut, weights, ones, "VALID"),
                                            tf.stack([batch, *blocks, filters])))
        y = interleave_and_crop(tf.concat(outputs, axis=-1), batch, plan, strides, filters)

        def gradient(dy):
            window = _pad(x, paddings, fusable=False)
            view = _phase_view(dy, batch, plan, strides, filters)
            size = tf.stack([-1, *blocks, -1])  # a phase's lengths
            dwindow, per_tap, last = None, {}, []
            for phase in phases:
                if 0 in taps[phase]:
                    continue
                with tf.control_dependencies(last):
                    rows = tf.reshape(view[:, phase[0], :, phase[1], :, phase[2] * filters:
                                           (phase[2] + 1) * filters],
                                      tf.stack([batch, *blocks, filters]))
                # The window gradient is the full correlation of the phase's
                # positions with its taps (unreversed, F -> C), shifted back by
                # the T - T_r positions the phase starts later.
                padded = tf.pad(rows, [[0, 0], *[[t_max - 1, t - 1] for t, t_max
                                                 in zip(taps[phase], longest)], [0, 0]])
                share = empty_batch_safe(
                    tf.nn.conv3d(padded, phase_kernel(kernel, phase), ones, "VALID"),
                    tf.stack(lengths(window)))
                dwindow = share if dwindow is None else dwindow + share
                offsets = list(itertools.product(*map(range, taps[phase])))
                products = _tap_products(
                    window, [[t_max - t + o for t_max, t, o in zip(longest, taps[phase], o3)]
                             for o3 in offsets],
                    size, tf.reshape(rows, (-1, filters)), channels, after=[dwindow, *last])
                for o3, product in zip(offsets, products):
                    # Weights tap o of the phase is kernel tap r + (T_r - 1 - o) * s.
                    per_tap[tuple(r + (t - 1 - o) * s for r, t, o, s
                                  in zip(phase, taps[phase], o3, strides))] = product
                last = [dwindow, products[-1]]
            dx = dwindow
            if any(p for pair in paddings for p in pair):  # the pad's gradient is its slice
                dx = tf.slice(dwindow, [0, *[before for before, _ in paddings], 0],
                              tf.stack(lengths(x)))
            dkernel = tf.reshape(tf.stack([per_tap[tap] for tap in
                                           itertools.product(*map(range, kernel_size))]),
                                 kernel.shape)
            return dx, dkernel

        return y, gradient

    return interleaved(x, kernel)


def _phase_view(dy, batch, plan, strides, filters):
    """The output gradient as ``(N*B1, s1, B2, s2, B3, s3*F)``, zero where the
    crop cut the window of blocks: phase ``r``'s positions are then the plain
    slice ``[:, r1, :, r2, :, r3*F:(r3+1)*F]``, which copies at memory speed
    (a strided slice of ``dy`` itself took 7 times as long on the k3 s2 U-Net
    stage)."""
    if not plan.window_is_output:
        dy = tf.pad(dy, [[0, 0], *[[c, b * s - c - n] for c, b, s, n in zip(
            plan.crop_begin, plan.blocks(), strides, plan.output_lengths)], [0, 0]])
    b1, b2, b3 = plan.blocks()
    s1, s2, s3 = strides
    return tf.reshape(dy, [batch * b1, s1, b2, s2, b3, s3 * filters])


def _reversed(weights):
    """``weights`` reversed along its three spatial axes, one axis at a time:
    OpenVINO's TensorFlow frontend converts a ReverseV2 of one axis only, and
    a SavedModel holding one of three axes did not convert."""
    for axis in range(3):
        weights = tf.reverse(weights, axis=[axis])
    return weights


def _cut(x, amounts):
    """``x`` less the positions a negative ``(before, after)`` amount cuts per spatial axis."""
    if all(a >= 0 for pair in amounts for a in pair):
        return x
    begin = [max(-before, 0) for before, _ in amounts]
    end = [-max(-after, 0) for _, after in amounts]
    return tf.slice(x, [0, *begin, 0], tf.stack(
        [-1, *[n - b + e for n, b, e in zip(lengths(x)[1:4], begin, end)], -1]))


def _pad(x, paddings, fusable):
    """``x`` zero-padded by ``(before, after)`` positions per spatial axis.

    A ``fusable`` pad is a Pad op, which TensorFlow's oneDNN remapper folds
    into the Conv3D reading it, saving a pass (up to a fifth of a forward
    here). The remapper does so without looking at the Pad's other readers:
    where there is one, it fails and then drops every fusion of the graph,
    the user's other layers' too, logging "remapper failed: ...
    Mutation::Apply error: fanout ... exist for missing node ...Pad" (TF
    2.21). A pad that more than its convolution reads is a PadV2 of zero,
    which the remapper leaves alone."""
    if not any(p for pair in paddings for p in pair):
        return x
    paddings = [[0, 0], *paddings, [0, 0]]
    if fusable:
        return tf.pad(x, paddings)
    return tf.raw_ops.PadV2(input=x, paddings=paddings, constant_values=tf.zeros((), x.dtype))


def _conv3d_valid(x, weights, paddings=((0, 0),) * 3):
    """``tf.nn.conv3d(x zero-padded by paddings, weights)``, stride 1,
    "VALID", with gradients that never call Conv3DBackprop* (slow on Eigen;
    docs/correctness.md): the input gradient is the forward convolution of
    the padded output gradient with the kernel reversed and transposed, the
    kernel gradient one ``(C, voxels) x (voxels, O)`` GEMM per tap.

    The forward's pad is made here, where the convolution is its one reader
    (:func:`_pad`): a custom gradient's arguments are read by the IdentityN
    that records them too. The kernel gradient reads a pad of its own.

    With an empty batch, oneDNN's conv3d may return a wrong spatial shape
    (docs/correctness.md): both convolutions' results go through
    :func:`~tf_conv3dt.ops.native.empty_batch_safe`."""
    taps = tuple(weights.shape[:3])
    channels, outputs = weights.shape[3], weights.shape[4]

    @tf.custom_gradient
    def convolve(x, weights):
        window = _pad(x, paddings, fusable=True)
        batch, *spatial, _ = lengths(window)
        out_spatial = [n - t + 1 for n, t in zip(spatial, taps)]
        y = empty_batch_safe(tf.nn.conv3d(window, weights, (1, 1, 1, 1, 1), "VALID"),
                             tf.stack([batch, *out_spatial, outputs]))

        def gradient(dy):
            padded = tf.pad(dy, [[0, 0], *[[t - 1, t - 1] for t in taps], [0, 0]])
            flipped = tf.transpose(_reversed(weights), (0, 1, 2, 4, 3))
            dx = empty_batch_safe(tf.nn.conv3d(padded, flipped, (1, 1, 1, 1, 1), "VALID"),
                                  tf.stack(lengths(window)))
            if window is not x:  # padded: the gradient of the pad is its slice
                dx = tf.slice(dx, [0, *[before for before, _ in paddings], 0],
                              tf.stack(lengths(x)))
            source = _pad(x, paddings, fusable=False)
            per_tap = _tap_products(source, list(itertools.product(*map(range, taps))),
                                    tf.stack([-1, *out_spatial, -1]),  # dy's lengths
                                    tf.reshape(dy, (-1, outputs)), channels)
            # (O, C) per tap -> (C, O)
            return dx, tf.reshape(tf.transpose(tf.stack(per_tap), (0, 2, 1)), weights.shape)

        return y, gradient

    return convolve(x, weights)


def _tap_products(window, starts, size, rows, channels, after=()):
    """A kernel gradient's taps: for each start, the ``(O, C)`` GEMM of
    ``rows`` (``(voxels, O)``, an output gradient) with the ``size`` block of
    ``window`` there (``(voxels, C)``). One block at a time: each waits for
    the previous tap's product (the first for ``after``), so the peak holds
    one block, not taps of them."""
    products = []
    for start in starts:
        with tf.control_dependencies(products[-1:] or list(after)):
            columns = tf.reshape(tf.slice(window, [0, *start, 0], size), (-1, channels))
        products.append(tf.matmul(rows, columns, transpose_a=True))
    return products


register(Subpixel())
