"""Entry points of the package's commands, which keep TensorFlow's C++ log off the terminal.

This module sits beside the tf_conv3dt package, not in it: importing
tf_conv3dt imports TensorFlow, which writes its start-up lines
(``cudart_stub.cc``, ``cpu_feature_guard.cc``, ...) to file descriptor 2
while it loads, before ``TF_CPP_MIN_LOG_LEVEL`` or absl's settings apply;
later the converter and LiteRT write dozens more. So a command sets
descriptors 1 and 2 (where C and C++ code writes) apart before that import:
they write into a held temporary file, while Python's ``sys.stdout`` and
``sys.stderr`` keep the terminal. Once the command has read its flags,
``--verbose`` shows what was held and everything after it; otherwise the
C++ output goes to /dev/null.

``python -m tf_conv3dt_cli export|tune ARGS...`` is the module form of
``tf-conv3dt-export`` and ``tf-conv3dt-tune``.
"""

import importlib
import os
import sys
import tempfile

# Each command's name after ``python -m tf_conv3dt_cli``, and the module whose
# main(argv, native_output) runs it.
COMMANDS = {"export": "tf_conv3dt.export.cli", "tune": "tf_conv3dt.tune"}


class NativeOutput:
    """Descriptors 1 and 2 held in a temporary file, apart from ``sys.stdout``
    and ``sys.stderr``, which keep writing where they did."""

    def __init__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self._terminal = os.dup(1), os.dup(2)
        sys.stdout = _text_stream(self._terminal[0], sys.stdout)
        sys.stderr = _text_stream(self._terminal[1], sys.stderr)
        self._held = tempfile.TemporaryFile()
        os.dup2(self._held.fileno(), 1)
        os.dup2(self._held.fileno(), 2)

    def show(self):
        """What was held goes to stderr, and descriptors 1 and 2 write to the
        terminal again (``--verbose``)."""
        self._held.seek(0)
        with os.fdopen(os.dup(self._terminal[1]), "wb") as terminal:
            terminal.write(self._held.read())
        os.dup2(self._terminal[0], 1)
        os.dup2(self._terminal[1], 2)
        self._held.close()

    def drop(self):
        """What was held, and all that C and C++ code writes from now on, goes
        nowhere."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        self._held.close()


def _text_stream(fd, like):
    return open(fd, "w", buffering=1, encoding=like.encoding, errors=like.errors,
                closefd=False)


def run(command, argv=None):
    """Runs a command of ``COMMANDS`` with its arguments; returns its exit status."""
    native_output = NativeOutput()
    try:
        main = importlib.import_module(COMMANDS[command]).main
    except BaseException:
        native_output.show()  # the C++ side of a failed import may say why
        raise
    return main(argv, native_output=native_output)


def export():
    """``tf-conv3dt-export``: see ``tf_conv3dt.export.cli``."""
    return run("export")


def tune():
    """``tf-conv3dt-tune``: see ``tf_conv3dt.tune``."""
    return run("tune")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"error: expected a command, one of {', '.join(COMMANDS)}, got "
              f"{sys.argv[1] if len(sys.argv) > 1 else 'none'!r} "
              "(usage: python -m tf_conv3dt_cli COMMAND ARGS...)", file=sys.stderr)
        sys.exit(2)
    sys.exit(run(sys.argv[1], sys.argv[2:]))
