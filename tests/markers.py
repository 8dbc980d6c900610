"""Markers the test modules share."""

import pytest

from tf_conv3dt._keras import LEGACY_KERAS

# The suite runs under Keras 3 and again under tf_keras. Checks of
# tf_conv3dt.conv3d_transpose alone (no layer, no Keras) would repeat
# themselves exactly in the second run: they run once per CI run, in the first.
op_only = pytest.mark.skipif(LEGACY_KERAS, reason="the op never touches Keras: the Keras 3 "
                             "run checks it once per CI run")
