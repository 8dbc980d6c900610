"""What a test or a whole run pins of the machine: the CPU configuration a
test's expected answer depends on, and the ISA class a run's probe reports.

The library reads the machine in ``tf_conv3dt.ops.cpu``: whether
TensorFlow runs oneDNN (``onednn_enabled``), the ISA class
(``cpu_isa``: /proc/cpuinfo's flags, or ``TF_CONV3DT_CPU_ISA``, capped by
``ONEDNN_MAX_CPU_ISA``) and whether there is a GPU (``on_a_gpu``). A test
whose answer depends on any of them pins them with :func:`pin`, so that its
verdict is the same on every machine. A whole run pins the probe by setting
``TF_CONV3DT_CPU_ISA`` to one of :data:`PROBES` (its child processes inherit
it), so that an AVX2 machine checks the answers of an AMX one, and the
reverse (test_cpu_pinning.py).
"""

import os

from tf_conv3dt.ops import cpu

# The ISA classes a run pins: an AVX2-only CPU, and an AVX-512 one with AMX.
PROBES = ("avx2", "amx")


def machine_probe():
    """The probe this machine is closest to: "amx" where it has AVX-512, else "avx2"."""
    return "amx" if "avx512f" in cpu._cpuinfo().get("flags", "").split() else "avx2"


def run_probe():
    """The probe this run reports: the one pinned, else this machine's."""
    return os.environ.get(cpu.ENV_CPU_ISA, "").strip().lower() or machine_probe()


def other_probe():
    """The probe a run pins to check the answers of the other kind of CPU."""
    return "avx2" if run_probe() == "amx" else "amx"


def pin(monkeypatch, configuration="onednn", isa="amx", gpu=False):
    """The library sees TensorFlow's ``configuration`` ("onednn" or
    "eigen"), oneDNN's ISA class ``isa`` ("amx", "avx512", "avx2") and a GPU
    or none, whatever this machine is."""
    if configuration not in ("onednn", "eigen"):
        raise ValueError(f"configuration must be 'onednn' or 'eigen'; received {configuration!r}")
    monkeypatch.setattr(cpu, "onednn_enabled", lambda: configuration == "onednn")
    monkeypatch.setattr(cpu, "cpu_isa", lambda: isa)
    monkeypatch.setattr(cpu, "on_a_gpu", lambda: gpu)
