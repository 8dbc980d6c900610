"""The round timer: warm-up, then rounds across the candidates, each's lowest time kept."""

import time

from tf_conv3dt.ops.tuning import policy


class Timer:
    """Times blocking calls on ``clock`` (seconds; ``time.perf_counter``
    unless a test gives another), by the knobs in ``policy.KNOBS``."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock

    def seconds(self, call):
        """Seconds of one run of ``call``."""
        started = self.clock()
        call()
        return self.clock() - started

    def primed(self, call):
        """Seconds of a run of ``call`` right after an untimed one: a call
        timed right after another function's ran up to 20% slower here
        (caches, and the allocator holding the other's buffer sizes), which
        would rank identical functions apart by their neighbours."""
        call()
        return self.seconds(call)

    def warmed_up(self, call, last):
        """``call``'s time once two successive runs agree, or its last run's;
        ``last``: the time of the run just before."""
        knobs = policy.KNOBS
        for _ in range(knobs.warmup_calls - 1):
            now = self.seconds(call)
            steady = abs(now - last) <= knobs.steady * max(last, now)
            last = now
            if steady:
                break
        return last

    def rounds(self, steps, budget_s, held_back=None):
        """Seconds of each ``steps`` entry's ``(forward, gradient)`` calls.

        ``steps`` maps a name to two blocking calls without arguments, in the
        order to try them (the likeliest winner first). Each call is first
        warmed up until two successive runs agree within ``Knobs.steady`` (at
        most ``Knobs.warmup_calls`` runs; a cold allocator or thread pool
        would rank a lowering by its first runs). A name whose forward,
        gradient and both together are already ``Knobs.drop_ratio`` times the
        best so far keeps those times and is not run again. Those within
        ``Knobs.race_ratio`` of the best (over both calls, or in either one),
        where there are two or more, are timed in rounds of one
        :meth:`primed` each, so that what else a shared machine runs weighs
        on all of them alike: ``Knobs.min_samples`` rounds, then more up to
        ``Knobs.max_samples`` while the next round fits in ``budget_s``,
        less what ``held_back`` (a function of the times so far, as
        returned) says a later step needs; the others keep their warm-up
        times. Returns ``{name: (forward_s, gradient_s)}``, the lowest time
        of each call, the statistic a busy machine's interruptions move least.
        """
        knobs = policy.KNOBS
        started = self.clock()
        warm, warmed, best = {}, [], [float("inf")] * 3  # forward, gradient, both
        for name, calls in steps.items():
            warm[name] = [self.seconds(call) for call in calls]
            if any(now <= knobs.drop_ratio * least for now, least in zip(
                    (*warm[name], sum(warm[name])), best)):  # else dropped: not warmed up
                warm[name] = [self.warmed_up(call, first)
                              for call, first in zip(calls, warm[name])]
                warmed.append(name)
                best = [min(least, now) for now, least in zip((*warm[name], sum(warm[name])),
                                                             best)]
        best, fastest = best[2], best[:2]
        kept = [name for name in warmed if sum(warm[name]) <= knobs.race_ratio * best
                or any(warm[name][call] <= knobs.race_ratio * fastest[call] for call in (0, 1))]
        samples = {name: ([], []) for name in kept} if len(kept) > 1 else {}

        def lowest():
            return {name: tuple(min(times) for times in samples[name]) if name in samples
                    else tuple(warm[name]) for name in steps}

        for round_ in range(knobs.max_samples if samples else 0):
            round_started = self.clock()
            for name in samples:
                for call, times in zip(steps[name], samples[name]):
                    times.append(self.primed(call))
            now = self.clock()
            if round_ + 1 >= knobs.min_samples and now + (now - round_started) - started > (
                    budget_s - (held_back(lowest()) if held_back else 0.0)):
                break
        return lowest()
