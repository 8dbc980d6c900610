"""The benchmarks, their shared helpers (``common``) and auto's rule derivation, as a package.

A script runs as ``python benchmarks/<script>.py`` and imports its helpers
as ``import common``: Python puts the script's own directory first on
``sys.path``. The tests and the docs build, run from the repository root
(``python -m pytest``, ``python -m mkdocs``, or MkDocs with docs/hooks.py),
import ``benchmarks.common`` and ``benchmarks.derive_auto_rule`` as any
package of the repository, with no path set by hand. Imported that way, a
module's ``import common`` would not resolve, so those two import no other
module of this directory.
"""
