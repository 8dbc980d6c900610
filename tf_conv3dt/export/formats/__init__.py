"""The export formats: the interface each kind of file an export writes has, and their registry.

Each format is a module that defines a :class:`Format` and registers one
instance (:func:`register`). ``export_model`` loops over the formats it is
asked for, in registration order, and knows none of them: each checks its
arguments and destination, stages its files, verifies them, adds its rows
and sections to the report and says what the printed report shows of them.
The export command's ``--formats`` offers every registered one.
"""

import contextlib
import importlib
import importlib.util
import os
from typing import Callable, NamedTuple

import numpy as np

from tf_conv3dt.export.errors import ExportError
from tf_conv3dt.export.signature import ForcedLowering


class Run(NamedTuple):
    """An export under way, as a format's methods see it."""

    job: object
    """The checked arguments (``job.Job``)."""
    staging: object
    """The ``staging.Staging`` every file is written in before publishing."""
    report: object
    """The ``report.Report`` so far."""
    inputs: np.ndarray
    """What every artifact is run on: the first calibration samples."""
    expected: np.ndarray
    """The Keras model's outputs for ``inputs``."""
    step: Callable
    """``step(text)`` reports progress; it may raise to abort the export."""


class Format:
    """One kind of file an export writes, verifies and publishes.

    A subclass names itself and overrides what applies to it: at least
    :meth:`stage` and :meth:`verify`.
    """

    name = None
    """What ``formats=`` and ``--formats`` call it."""
    lowering = None
    """The :class:`~tf_conv3dt.export.signature.ForcedLowering` its files are
    traced with when no implementation is asked for; None for a format that
    traces nothing (model.keras keeps each layer's own)."""
    packages = ()
    """The optional packages it imports: where one is missing, an export that
    asks for it is refused before anything is written."""
    extra = None
    """The pip extra of tf_conv3dt that installs ``packages``."""
    by_default = True
    """Whether an export that names no formats writes it."""

    def missing_packages(self):
        """Those of ``packages`` that are not installed."""
        return [name for name in self.packages if importlib.util.find_spec(name) is None]

    def lowering_for(self, implementation):
        """What its files are traced with when ``implementation`` is asked for
        (``job.implementations()``): that lowering, or :attr:`lowering` for
        None and for "tuned", whose timings are TensorFlow's, not its runtime's."""
        if implementation is None or implementation == "tuned":
            return self.lowering
        return ForcedLowering(implementation)

    def check_arguments(self, job):
        """Raises an ExportError naming the argument of ``job`` (a ``job.Job``)
        it cannot take. Every export asks every registered format, so that
        an argument is checked whether or not its format is written."""

    def check_destination(self, job):
        """Raises an ExportError where it cannot publish under ``job.out_dir``;
        asked before anything is created there."""

    def directory(self, job):
        """The directory under ``job.out_dir`` it publishes into, created before
        staging and checked writable; None for ``out_dir`` itself."""
        return None

    def stage(self, run):
        """Writes its files into ``run.staging``, reporting each step with
        ``run.step``, and yields, file by file (or set of files), what
        :meth:`verify` takes of each. Sections of its own go into
        ``run.report.sections``."""
        raise NotImplementedError

    def verify(self, run, staged):
        """The report rows (``report.Row``) of what :meth:`stage` yielded
        (``staged``): each file run on ``run.inputs`` against
        ``run.expected``, with the tolerance it is held to."""
        raise NotImplementedError

    def claim(self, run):
        """Publishes what publishing may still refuse (a TF Serving version
        that appeared meanwhile), setting its rows' paths; called for every
        format before any staged row is renamed into place."""

    def notes(self, report):
        """Lines under the printed report's table about its rows, from
        ``report`` (report.json's dict)."""
        return []

    def details(self, report):
        """Longer blocks that end the printed report, from ``report``."""
        return []

    def __repr__(self):
        return f"<export format {self.name!r}>"


def refuse_a_directory(path, out_dir):
    """Refuses, as ``out_dir``'s problem, a directory where the file ``path``
    is to be published."""
    if os.path.isdir(path):
        raise ExportError(f"{path} is a directory; it must be a file or absent", "out_dir",
                          out_dir)


_REGISTRY = {}


def register(format_):
    """Adds ``format_`` (a :class:`Format`) under its name; a name already
    registered is refused."""
    if not isinstance(format_, Format) or not isinstance(format_.name, str):
        raise TypeError(f"register takes a Format with a name. Received: {format_!r}")
    if format_.name in _REGISTRY:
        raise ValueError(f"An export format named {format_.name!r} is already registered.")
    _REGISTRY[format_.name] = format_
    return format_


def unregister(name):
    """Removes the format ``name`` registered."""
    del _REGISTRY[name]


@contextlib.contextmanager
def registered(format_):
    """``format_`` registered for the block, then removed."""
    register(format_)
    try:
        yield format_
    finally:
        unregister(format_.name)


def names():
    """The registered formats' names, in registration order."""
    return tuple(_REGISTRY)


def defaults():
    """The names of the formats an export that names none writes (``Format.by_default``)."""
    return tuple(name for name, format_ in _REGISTRY.items() if format_.by_default)


def get(name):
    """The format registered as ``name``."""
    return _REGISTRY[name]


def every():
    """Every registered format, in registration order."""
    return tuple(_REGISTRY.values())


def chosen(formats):
    """The formats ``formats`` names (a sequence of names, a comma-separated
    string, or None for every one written by default), in registration order; an ExportError
    names ``formats`` for an unknown name, none at all, or a format whose
    packages are missing."""
    if formats is None:
        formats = defaults()
    elif isinstance(formats, str):
        formats = [name.strip() for name in formats.split(",") if name.strip()]
    unknown = [name for name in formats if name not in _REGISTRY]
    if unknown or not formats:
        raise ExportError(f"choose one or more of {', '.join(_REGISTRY)}", "formats",
                          tuple(formats))
    for name in formats:
        missing = _REGISTRY[name].missing_packages()
        if missing:
            raise ExportError(f"{name} needs {', '.join(missing)}: pip install "
                              f"'tf_conv3dt[{_REGISTRY[name].extra}]', or leave {name} out",
                              "formats", tuple(formats))
    return tuple(format_ for name, format_ in _REGISTRY.items() if name in formats)


# The built-in formats' modules, each of which registers its format on
# import, in this order: the order they are staged in and their rows stand in
# the report.
BUILT_IN = ("keras", "savedmodel", "tflite", "onnx", "openvino")
for _module in BUILT_IN:
    importlib.import_module(f"{__name__}.{_module}")
