"""Every marker the test modules share, registered with pytest by conftest.py."""

import pytest

from tf_conv3dt._keras import LEGACY_KERAS

SMOKE = "smoke: the subset the oldest-TensorFlow job runs (the layer, the lowerings, one export)"
smoke = pytest.mark.smoke
CPU_SENSITIVE = ("cpu_sensitive: a test whose expected answer depends on the CPU configuration, "
                 "which it pins (cpu_pin.py); rerun under the other oneDNN setting and the "
                 "other CPU probe by test_cpu_pinning.py")
cpu_sensitive = pytest.mark.cpu_sensitive


def once_per_ci_run(why):
    """The suite runs under Keras 3 and again under tf_keras. A check whose
    result cannot depend on the flavour (``why`` says why) would repeat itself
    exactly in the second run: it runs once per CI run, in the first."""
    return pytest.mark.skipif(LEGACY_KERAS, reason=f"{why}: the Keras 3 run checks it once "
                              "per CI run")


# Checks of tf_conv3dt.conv3d_transpose alone (no layer, no Keras).
op_only = once_per_ci_run("the op never touches Keras")

# What the CLI and the staging do with signals, a relative path and a
# tolerance miss, and a grouped model's files (its groups live in the op):
# the exports of ungrouped models run under both flavours.
cli_only = once_per_ci_run("no Keras-dependent step that other exports here lack")


def register(config):
    config.addinivalue_line("markers", SMOKE)
    config.addinivalue_line("markers", CPU_SENSITIVE)
