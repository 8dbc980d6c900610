"""``python -m tf_conv3dt.export``: the export command (``tf_conv3dt.export.cli``)."""

import sys

from tf_conv3dt.export.cli import main

sys.exit(main())
