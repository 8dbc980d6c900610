"""What the package's commands share: one-line usage errors, ASCII integers, quiet C++ logs."""

import argparse
import contextlib
import os
import sys


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, the exit status of every user error
        self.exit(2, f"error: {message} (see --help)\n")


def ascii_integer(text):
    """An int from ASCII digits only (no sign, no other script's digits);
    its range is the library's to check."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a positive integer in ASCII digits, "
                                         f"got {text!r}")
    return int(text)


@contextlib.contextmanager
def native_output_silenced(silenced):
    """With --quiet, TensorFlow's and LiteRT's C++ logging (which ignores
    TF_CPP_MIN_LOG_LEVEL before absl is initialised) goes to /dev/null too."""
    if not silenced:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
