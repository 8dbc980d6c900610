"""Every marker the test modules share, registered with pytest by conftest.py."""

import pytest

from tf_conv3dt._keras import LEGACY_KERAS

SMOKE = "smoke: the subset the oldest-TensorFlow job runs (the layer, the lowerings, one export)"
smoke = pytest.mark.smoke

# The suite runs under Keras 3 and again under tf_keras. Checks of
# tf_conv3dt.conv3d_transpose alone (no layer, no Keras) would repeat
# themselves exactly in the second run: they run once per CI run, in the first.
op_only = pytest.mark.skipif(LEGACY_KERAS, reason="the op never touches Keras: the Keras 3 "
                             "run checks it once per CI run")

# What the CLI and the staging do with signals, a relative path and a
# tolerance miss does not depend on the Keras flavour (the exports themselves
# run under both): checked once per CI run, in the Keras 3 run.
cli_only = pytest.mark.skipif(LEGACY_KERAS, reason="no Keras-dependent step that other "
                              "exports here lack: the Keras 3 run checks it once per CI run")


def register(config):
    config.addinivalue_line("markers", SMOKE)
