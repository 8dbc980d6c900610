#!/usr/bin/env python
"""Export a Keras model (default: the reference example) to every deployment artifact.

The command the README runs from a clone; installed, the same command is
``tf-conv3dt-export`` or ``python -m tf_conv3dt_cli export``
(``tf_conv3dt.export.cli``; ``--help`` lists the flags and exit statuses).
Like them it keeps TensorFlow's C++ log off the terminal unless --verbose.
"""

import sys

import tf_conv3dt_cli

if __name__ == "__main__":
    sys.exit(tf_conv3dt_cli.export())
