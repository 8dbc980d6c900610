"""``python -m tf_conv3dt.export``: the export command, as ``python -m tf_conv3dt_cli export``.

Python imports the tf_conv3dt package, and with it TensorFlow, before this
module runs, so TensorFlow's C++ start-up lines come first here; the
``tf_conv3dt_cli`` form keeps those off too.
"""

import sys

import tf_conv3dt_cli

sys.exit(tf_conv3dt_cli.run("export", sys.argv[1:]))
