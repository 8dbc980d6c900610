"""The record of one configuration's choice: what was timed, what runs, and where it came from."""

import dataclasses
from typing import NamedTuple

from tf_conv3dt.ops import lowerings
from tf_conv3dt.ops.call import Call
from tf_conv3dt.ops.tuning import policy


class Decision(NamedTuple):
    """One configuration's choice: the key (``Call.tuning_key``), the
    lowering the forward pass runs and the one whose gradient training runs,
    each candidate's (forward, gradient) ms (and a proposed pair's,
    "forward+gradient", where one was timed together: ``measure.pair``), the
    batch and input spatial lengths they were timed at
    (``measure.timed_shape``), the seconds the timing took (tracing
    included; what ``Knobs.budget_s`` bounds), where the choice came from
    ("measured", "cache" or "memory"), and each timed lowering's training
    step's peak resident-memory growth in MiB there (``measure.lowerings``;
    None where it could not be read)."""

    key: tuple
    forward: str
    gradient: str
    ms: dict
    batch: int
    spatial: tuple
    seconds: float
    source: str
    peaks: dict = {}

    @property
    def call(self):
        """The call the key describes, its batch as the trace knew it."""
        return Call.from_tuning_key(self.key)

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
        (``policy.ranked_gradients``): "; native's gradient not ranked on a
        block", or nothing."""
        call, times = self.call, lowering_times(self.ms)
        on_a_block = tuple(call.input_shape[1:4]) != tuple(self.spatial)
        ranked = policy.ranked_gradients(times, call, on_a_block)
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
        call = self.call
        shape, kernel = call.input_shape, call.kernel_shape
        times = "  ".join(f"{name} {f:.2f}/{t:.2f}" for name, (f, t) in self.ms.items())
        # The key holds the input as the lowerings see it, channels last.
        block = "" if tuple(shape[1:4]) == tuple(self.spatial) else f" on {tuple(self.spatial)}"
        given = shape[1:] if call.data_format == "channels_last" else (shape[4], *shape[1:4])
        return (f"{call.dtype} {call.data_format} input {tuple(given)} at batch {self.batch}"
                f"{block}, "
                f"kernel {tuple(kernel[:3])} -> {kernel[3]} filters, strides "
                f"{tuple(call.strides)}, {call.padding}, dilation {tuple(call.dilation)}, "
                f"output {tuple(call.output_lengths)} | ms forward/gradient: "
                f"{times or 'none timed'}{self.estimates()} | {self.runs(serving)} "
                f"({self.source}){self.unranked}")

    def estimates(self):
        """" | estimated training-step peak MiB: NAME N ..." for each timed
        lowering that estimates one (``Lowering.memory``) at the batch it
        was timed at, then " | measured on the timed input: NAME N ..." for
        each whose peak was read (:attr:`peaks`), or nothing."""
        call = dataclasses.replace(self.call, input_shape=(self.batch,
                                                           *self.call.input_shape[1:]))
        peaks = {name: lowerings.get(name).memory(call) for name in lowering_times(self.ms)}
        text = "  ".join(f"{name} {peak / 2**20:.0f}" for name, peak in peaks.items()
                         if peak is not None)
        measured = "  ".join(f"{name} {self.peaks[name]:.0f}" for name in peaks
                             if self.peaks.get(name) is not None)
        return ((f" | estimated training-step peak MiB: {text}" if text else "")
                + (f" | measured on the timed input: {measured}" if measured else ""))


def fastest_first(times):
    """``times`` ({name: (forward, gradient)}) ordered by forward plus
    gradient, as a decision lists them, whether measured or read back."""
    return dict(sorted(times.items(), key=lambda item: sum(item[1])))


def lowering_times(times):
    """The entries of ``times`` that time one lowering (not a pair's)."""
    names = lowerings.names()
    return {name: ms for name, ms in times.items() if name in names}
