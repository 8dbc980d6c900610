"""MkDocs hooks: the pages' result tables and charts, and no undocumented public name.

The public names are the ``__all__`` of each module in ``PUBLIC_MODULES``.
Each must be on the API reference page (``docs/api.md``), as a mkdocstrings
``::: module.name`` block with a docstring of its own, or, for a name that
is another package's object (``tf_conv3dt.keras``), named in the page's text.
"""

import os
import re
import sys

import griffe
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# MkDocs loads this file with docs/ on sys.path, and the tables import the
# benchmarks package from the repository root, which the ``mkdocs`` command
# leaves off sys.path (``python -m mkdocs`` would put it there).
sys.path.insert(0, ROOT)
import charts  # noqa: E402
import tables  # noqa: E402

PUBLIC_MODULES = ("tf_conv3dt", "tf_conv3dt.ops", "tf_conv3dt.export", "tf_conv3dt.quantization",
                  "tf_conv3dt.examples")
API_PAGE = "api.md"


def on_files(files, config):
    """Adds the charts the pages ask for, drawn from their result files."""
    drawn = {}
    for page in files.documentation_pages():
        drawn.update(charts.charts(page.content_string))
    for path, svg in drawn.items():
        files.append(File.generated(config, path, content=svg))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == API_PAGE:
        _check_reference(markdown)
    return charts.fill(tables.fill(markdown), page.file.src_uri)


def _check_reference(markdown):
    package = griffe.load("tf_conv3dt", search_paths=[ROOT], resolve_aliases=True,
                          resolve_external=False)
    documented = {_target(package, path) for path in
                  re.findall(r"^::: (\S+)$", markdown, re.MULTILINE)}
    problems = []
    for module_path in PUBLIC_MODULES:
        module = package[module_path[len("tf_conv3dt."):]] if "." in module_path else package
        for name in module.exports or ():
            path = f"{module_path}.{name}"
            target = _target(package, path)
            if target is None or target.is_attribute:  # another package's, or a constant
                if f"`{path}`" not in markdown:
                    problems.append(f"{path} is not named on {API_PAGE}")
            elif target not in documented:
                problems.append(f"{path} has no '::: {path}' block on {API_PAGE}")
            elif not target.docstring:
                problems.append(f"{path} has no docstring")
    if problems:
        raise SystemExit("undocumented public names:\n  " + "\n  ".join(problems))


def _target(package, path):
    """The object ``path`` names, through aliases; None if it is another package's."""
    try:
        member = package[path[len("tf_conv3dt."):]] if path != "tf_conv3dt" else package
        return member.final_target if member.is_alias else member
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
