"""The tests whose answer depends on the CPU configuration pin it (cpu_pin.py,
marked ``cpu_sensitive``): rerun in a process under the other oneDNN
setting, and in one with the other kind of CPU probe pinned, they pass there
too, so that a verdict never depends on the machine the suite ran on."""

import os
import subprocess
import sys

import pytest

import cpu_pin
from markers import op_only
from tf_conv3dt.ops import cpu

CHILD = "TF_CONV3DT_CPU_PINNING_CHILD"
TESTS = os.path.dirname(os.path.abspath(__file__))


def _other_onednn_setting():
    """The environment of the other oneDNN setting, and what the probe then reads."""
    onednn = cpu.cpu_configuration() == "onednn"
    return ({"TF_ENABLE_ONEDNN_OPTS": "0" if onednn else "1"},
            ("eigen" if onednn else "onednn", cpu.cpu_isa()))


def _other_probe():
    """The environment with the other probe pinned (and oneDNN's cap lifted,
    which would hold it back), and what the probe then reads."""
    probe = cpu_pin.other_probe()
    return ({cpu.ENV_CPU_ISA: probe}, (cpu.cpu_configuration(), probe))


@pytest.mark.skipif(os.environ.get(CHILD) == "1",
                    reason="already the rerun under another CPU configuration")
@op_only
@pytest.mark.parametrize("change", [_other_onednn_setting, _other_probe],
                         ids=["other-onednn-setting", "other-cpu-probe"])
def test_cpu_sensitive_tests_pass_under_another_cpu_configuration(change):
    changes, expected = change()
    env = {name: value for name, value in os.environ.items() if name != "ONEDNN_MAX_CPU_ISA"
           or cpu.ENV_CPU_ISA not in changes}
    env.update(changes, TF_CPP_MIN_LOG_LEVEL="2")
    env[CHILD] = "1"
    probe = subprocess.run(
        [sys.executable, "-c", "from tf_conv3dt.ops import cpu; "
         "print(cpu.cpu_configuration(), cpu.cpu_isa())"],
        env=env, capture_output=True, text=True, check=True)
    assert tuple(probe.stdout.split()[-2:]) == expected, (probe.stdout, expected)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cpu_sensitive",
         TESTS], env=env, capture_output=True, text=True, cwd=TESTS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1], result.stdout[-500:]
