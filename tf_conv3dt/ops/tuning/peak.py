"""Peak resident-memory growth during a block, where Linux lets a process reset its high-water mark.

TensorFlow keeps no allocator statistics on a CPU, so the peak of a call is
read from the process: ``/proc/self/clear_refs`` resets ``VmHWM``, and the
peak is ``VmHWM`` after the call less ``VmRSS`` before it. The allocator
keeps some freed memory, so in a process that ran other work first the
growth can be less than the call's footprint: a lower bound. Elsewhere
(another OS, or no permission) there is no reading.
"""

import ctypes


def status(field, pid="self"):
    """``field`` ("VmRSS:", "VmHWM:") of ``/proc/PID/status``, in bytes (0 if absent)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def trim():
    """Hands what the C allocator holds freed back to the system, where it can."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """``with PeakMemory() as memory: ...`` sets ``memory.peak``: the block's
    peak resident-memory growth in bytes, or None where it cannot be read."""

    def __enter__(self):
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.before = status("VmRSS:")
        except OSError:
            self.before = None
        return self

    def __exit__(self, *exc):
        self.peak = (None if self.before is None
                     else max(status("VmHWM:") - self.before, 0))
