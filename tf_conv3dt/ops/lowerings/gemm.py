"""The GEMM lowering: one matmul per tap (or per stride phase), overlap-added by phase."""

import itertools
import math

import tensorflow as tf

from tf_conv3dt import shapes
from tf_conv3dt.ops import cpu
from tf_conv3dt.ops.lowerings import Lowering, register
from tf_conv3dt.ops.plan import (block_window, block_window_gradient, block_window_pads,
                                 interleave_and_crop, overlaps_window)


class Gemm(Lowering):
    """Multiplies the input voxels ``(N*D*H*W, C)`` by the kernel (as ``(C,
    kd*kh*kw*filters)`` in one matmul when kernel == stride, else tap by tap;
    a depthwise kernel by broadcast multiplies, in one call), overlap-adds
    the taps into the output by stride phase and interleaves the phases (a
    3-D depth-to-space). Every intermediate has rank <= 6 and every op is a
    TFLite builtin, so the graph converts to TFLite, and autodiff through it
    never reaches the slow Conv3DBackprop* CPU kernels. Dilation places each
    tap at its dilated offset."""

    name = "gemm"
    runs_depthwise_in_one_call = True

    def refuses(self, call):
        return unrolled_refusal(call, self.name)

    def forward(self, x, kernel, plan, call, epilogue=None):
        return gemm(x, kernel, plan, call.strides, call.dilation, groups=call.groups)

    def memory(self, call):
        """Three outputs' worth where no taps overlap (each phase one product).
        Where they do, and the taps go one at a time (:func:`_tap_by_tap`),
        outputs' worth: 7.2 under Eigen, 4.8 under oneDNN; where they go at
        once, every tap's product nearly twice over (each product, and its
        gradient's share), and four outputs. From bench_memory.py's k3 s2,
        k2 s2 and k4 s2 cases on the AVX2-only EPYC."""
        sizes = call.sizes()
        if sizes is None:
            return None
        _, output, products = sizes
        if call.relation in ("kernel < stride", "kernel == stride"):
            return int(3.1 * output)
        if products // math.prod(call.kernel_size) >= CHAINED_PRODUCT_BYTES:
            return int((4.8 if cpu.onednn_enabled() else 7.2) * output)
        return int(4.3 * output + 1.85 * products)


# The product size (bytes, all examples) from which the GEMM lowering's taps
# go one at a time (_tap_by_tap).
CHAINED_PRODUCT_BYTES = 8 << 20


def unrolled_refusal(call, name):
    """Why ``name``, which builds ops for each stride phase and kernel tap,
    cannot run ``call``: more than ``shapes.MAX_UNROLLED`` of either; else None."""
    excess = call.unrolled_excess
    if excess is None:
        return None
    argument, count = excess
    value = call.strides if argument == "strides" else call.kernel_size
    return (f"implementation={name!r} builds ops for each of the {count} "
            f"{'stride phases' if argument == 'strides' else 'kernel taps'} (at most "
            f"{shapes.MAX_UNROLLED}); use implementation='native' or 'auto'. Received: "
            f"{argument}={value}")


def gemm(x, kernel, plan, strides, dilation, one_product_per_phase=False, epilogue=None,
         product_weights=None, groups=1):
    """The output, and whether ``epilogue`` (an elementwise function of the
    products, by filter: the bias and activation) was applied to it.

    In the ``one_product_per_phase`` form it is applied to each phase's
    product as the matmul gives it, where TFLite fuses it into the
    FULLY_CONNECTED (its int32 bias and fused activation), and to the phases
    no tap reaches: every output is then one accumulation, requantized once.
    Elsewhere (and where kernel == stride needs the window padded past the
    products) it is not applied, and the caller applies it to the output.
    ``product_weights`` (``(matrix, input_axis) -> matrix``), where given,
    makes each product's weights: the int8 grid the converter gives them for
    quantization-aware training (``lowerings.gemm_int8``). With ``groups``
    equal to the channels (depthwise; not in the ``one_product_per_phase``
    form) each product is :func:`depthwise_product`, and the rest is the
    same for every filter.
    """
    def grid(matrix, input_axis):
        if product_weights is None:
            return matrix
        return product_weights(matrix, input_axis)

    kd, kh, kw, per_group, channels = kernel.shape
    if groups > 1 and (one_product_per_phase or groups != channels):
        raise ValueError("The GEMM lowering takes groups in one call only depthwise and "
                         f"not one_product_per_phase; received groups={groups}, "
                         f"{channels} channels, one_product_per_phase={one_product_per_phase}")
    filters = per_group * groups
    kernel_size = (kd, kh, kw)
    batch = tf.shape(x)[0]
    fuse = epilogue is not None and one_product_per_phase
    # One filter's bias, tiled over the taps, folds into a constant of one
    # repeated value, which the converter's QAT path quantizes with the first
    # output channel's scale only (5 to 138 steps off, docs/quantization.md):
    # that case takes one product per phase, each with its own bias.
    if kernel_size == strides and not (fuse and filters == 1 and math.prod(strides) > 1):
        # Each tap is its own stride phase and no tap overlaps another: one
        # matmul by the kernel as (C, kd*kh*kw*F) gives the phase tensor.
        if groups > 1:
            phases = depthwise_product(tf.reshape(x, (-1, channels)),
                                       tf.reshape(kernel, (-1, per_group, channels)))
        else:
            matrix = tf.reshape(tf.transpose(kernel, (4, 0, 1, 2, 3)), (channels, -1))
            phases = tf.matmul(tf.reshape(x, (-1, channels)), grid(matrix, 0))
        # Padding would put zeros, not the epilogue's value, past the products.
        fuse = fuse and not block_window_pads(plan, (0, 0, 0))
        if fuse:
            phases = epilogue(phases)
        # The channel count spelled out: -1 is ambiguous for an empty batch.
        phases = tf.reshape(phases, [batch, *plan.input_lengths, kd * kh * kw * filters])
        phases = block_window(phases, plan, (0, 0, 0))
    else:
        phases = _overlap_add(x, kernel, batch, plan, strides, dilation,
                              one_product_per_phase, epilogue if fuse else None, grid, groups)
    return interleave_and_crop(phases, batch, plan, strides, filters), fuse


def depthwise_product(rows, weights):
    """``rows`` ``(V, C)`` times the taps' depthwise ``weights`` ``(T, m, C)``
    (``m`` filters per channel): ``(V, T * C * m)``, tap by tap, each
    channel's m filters together. Each product is one input channel times
    one weight, so it is a broadcast multiply: no zeros between channels
    (a product by the whole kernel would add them, and carry one channel's
    Inf or NaN into the others), and no matmul of inner length 1."""
    taps, multiplier, channels = weights.shape
    products = rows[:, None, :, None] * tf.transpose(weights, (0, 2, 1))[None]
    return tf.reshape(products, (-1, taps * channels * multiplier))


def _overlap_add(x, kernel, batch, plan, strides, dilation, one_product_per_phase, epilogue,
                 grid, groups=1):
    """Sums the taps of each stride phase, each shifted by its block offset.

    Tap ``j`` lands at ``i * s + j * d = (i + q) * s + r`` with ``q, r =
    divmod(j * d, s)``: phase ``r``, shifted ``q`` blocks. By default each
    tap is its own ``(voxels, C) x (C, F)`` product, moved straight into the
    output's block window: one product with all taps side by side would
    materialise a tensor kd*kh*kw times the input's voxels by F and copy every
    tap out of it (2-2.5x slower here, with the memory peak to match). With
    ``one_product_per_phase`` each phase is one product of its taps' shifted
    input windows instead, by its weights put on ``grid``, and ``epilogue``
    (if given) applies to each phase's product and to the phases without
    taps. Returns the phases concatenated on the channel axis in (rd, rh, rw)
    order.
    """
    epilogue = epilogue or (lambda values: values)
    kernel_size, per_group, channels = tuple(kernel.shape[:3]), kernel.shape[3], kernel.shape[4]
    filters = per_group * groups
    taps_by_phase = {}
    for offsets in itertools.product(*map(range, kernel_size)):
        placed = [divmod(j * d, s) for j, s, d in zip(offsets, strides, dilation)]
        shifts = [q for q, _ in placed]
        if overlaps_window(plan, shifts):  # else, e.g., an outer tap cropped by "same"
            taps_by_phase.setdefault(tuple(r for _, r in placed), []).append((offsets, shifts))
    if not taps_by_phase:  # every tap misses the window on some axis
        return epilogue(_unreached_zeros(x, kernel, tf.stack(
            [batch, *plan.blocks(), math.prod(strides) * filters])))
    if not one_product_per_phase:
        return _tap_by_tap(x, kernel, batch, plan, strides, taps_by_phase, groups)
    # Each tap's (F, C) weights, FULLY_CONNECTED's own layout, from one
    # Unpack: per-tap slices cost an op each, and a StridedSliceGrad each.
    tap_weights = dict(zip(itertools.product(*map(range, kernel_size)),
                           tf.unstack(tf.reshape(kernel, (-1, per_group, channels)))))
    phases = []
    for phase in itertools.product(*map(range, strides)):
        taps = taps_by_phase.get(phase)
        if not taps:
            phases.append(epilogue(tf.zeros(tf.stack([batch, *plan.blocks(), filters]),
                                            x.dtype)))
            continue
        windows = [block_window(x, plan, shifts) for _, shifts in taps]
        windows = tf.concat(windows, axis=-1) if len(windows) > 1 else windows[0]
        weights = tf.concat([tap_weights[offsets] for offsets, _ in taps], axis=1)
        product = epilogue(tf.matmul(tf.reshape(windows, (-1, len(taps) * channels)),
                                     grid(weights, 1), transpose_b=True))
        phases.append(tf.reshape(product, [batch, *plan.blocks(), filters]))
    return tf.concat(phases, axis=-1) if len(phases) > 1 else phases[0]


def _tap_by_tap(x, kernel, batch, plan, strides, taps_by_phase, groups):
    """The phases of :func:`_overlap_add`'s default form, each the sum of its
    taps' products moved into the window (:func:`block_window`).

    The gradient goes tap by tap too, each tap's product's gradient (the
    output gradient's part it landed in) making the tap's share of the
    input gradient, added to the sum, and its kernel gradient, where
    autodiff held every tap's share until one AddN summed them.

    Where a product is :data:`CHAINED_PRODUCT_BYTES` or more, the taps go
    one at a time, each waiting for the sum before it, so that the peak
    holds one product, not every tap's: on the AVX2-only EPYC
    (bench_memory.py), a training step of the k3 s2 U-Net stage, (1, 64^3,
    32) -> 16, peaked at 708-853 MiB under Eigen and 529 under oneDNN,
    against 1,366 and 1,107 with autodiff and every tap at once, and of the
    k4 s2 stage at 873-923 and 618, against 2,624 and 2,274; its time was
    0.55-0.6 of autodiff's under Eigen and 1.05-1.11 times under oneDNN.
    Below it the order costs more time than the memory it saves: a (1,
    32^3, 64) -> 32 k3 s2 step took 1.19 times as long under oneDNN, and a
    (2, 16^3, 32) k3 s1 one 1.4 times."""
    kernel_size, per_group, channels = tuple(kernel.shape[:3]), kernel.shape[3], kernel.shape[4]
    filters = per_group * groups
    all_taps = list(itertools.product(*map(range, kernel_size)))
    phases = list(itertools.product(*map(range, strides)))
    # An unknown batch counts as one example; an unknown volume as a large one.
    known = [n for n in [x.shape[0] or 1, *plan.input_lengths] if isinstance(n, int)]
    chained = (len(known) < 4
               or math.prod(known) * filters * x.dtype.size >= CHAINED_PRODUCT_BYTES)

    def after(ops):
        return tf.control_dependencies(ops if chained else [])

    def product(rows, weights):  # (V, C) by a tap's (F, C) weights (depthwise: (m, C))
        if groups > 1:
            return depthwise_product(rows, weights[None])
        return tf.matmul(rows, weights, transpose_b=True)

    def product_gradient(rows, weights, upstream):  # the rows' and the weights'
        if groups > 1:  # upstream (V, C*m): each channel's m filters together
            upstream = tf.reshape(upstream, (-1, channels, per_group))
            return (tf.einsum("vcm,mc->vc", upstream, weights),
                    tf.einsum("vc,vcm->mc", rows, upstream))
        return (tf.matmul(upstream, weights),
                tf.matmul(upstream, rows, transpose_a=True))

    @tf.custom_gradient
    def tap_by_tap(x, kernel):
        rows = tf.reshape(x, (-1, channels))  # one row per input voxel
        # Each tap's (F, C) weights (depthwise: (m, C)), from one Unpack:
        # per-tap slices cost an op each.
        tap_weights = dict(zip(all_taps, tf.unstack(tf.reshape(kernel, (-1, per_group,
                                                                         channels)))))
        product_shape = tf.stack([batch, *plan.input_lengths, filters])
        outputs, last = [], []
        for phase in phases:
            total = None
            for offsets, shifts in taps_by_phase.get(phase, ()):
                with after(last):
                    moved = block_window(tf.reshape(product(rows, tap_weights[offsets]),
                                                    product_shape), plan, shifts)
                # Pairwise adds, not add_n: TFLite's ADD_N has no int8 kernel.
                total = moved if total is None else total + moved
                last = [total]
            outputs.append(tf.zeros(tf.stack([batch, *plan.blocks(), filters]), x.dtype)
                           if total is None else total)
        y = tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]

        def gradient(dy):  # reads the forward's rows and tap weights
            drows, dweights, last = None, {}, []
            for index, phase in enumerate(phases):
                taps = taps_by_phase.get(phase, ())
                if taps:
                    with after(last):
                        phase_dy = tf.slice(dy, [0, 0, 0, 0, index * filters],
                                            [-1, -1, -1, -1, filters])
                for offsets, shifts in taps:
                    with after(last):
                        upstream = tf.reshape(block_window_gradient(phase_dy, plan, shifts),
                                              (-1, filters))
                    share, dweights[offsets] = product_gradient(
                        rows, tap_weights[offsets], upstream)
                    drows = share if drows is None else drows + share
                    last = [drows, dweights[offsets]]
            dkernel = tf.stack([dweights[offsets] if offsets in dweights
                                else tf.zeros_like(tap_weights[offsets])
                                for offsets in all_taps])
            return tf.reshape(drows, tf.shape(x)), tf.reshape(dkernel, kernel.shape)

        return y, gradient

    if not (tf.executing_eagerly() or tf.inside_function()):
        # A TF1 graph, such as graph_rewrite's for the TFLite converter, where
        # the custom gradient's IdentityN made the converted file return the
        # first layer's phases, not the model's output (TF 2.21): the plain
        # forward ops, which autodiff differentiates.
        return tap_by_tap.__wrapped__(x, kernel)[0]
    return tap_by_tap(x, kernel)


def _unreached_zeros(x, kernel, shape):
    """Zeros of ``shape`` for an output that no input voxel or tap reaches (a
    dilated kernel whose taps all fall outside a "same" window), with the zero
    gradients it has with respect to ``x`` and ``kernel``: computed without
    them, it would leave their gradients ``None``, and in a Keras model every
    layer before it without one."""

    @tf.custom_gradient
    def zeros(x, kernel):
        return (tf.zeros(shape, x.dtype),
                lambda dy: (tf.zeros_like(x), tf.zeros_like(kernel)))

    return zeros(x, kernel)


register(Gemm())
