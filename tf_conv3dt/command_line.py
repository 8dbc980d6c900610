"""What the package's commands share: one-line usage errors, ASCII integers, the output flags."""

import argparse


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


def add_output_flags(parser):
    """--quiet and --verbose: what a command prints besides its own lines."""
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="print nothing but errors")
    shown.add_argument("--verbose", action="store_true",
                       help="print TensorFlow's and LiteRT's C++ log too (by default the "
                            "installed command and `python -m tf_conv3dt_cli` keep it off)")


def route_native_output(args, native_output):
    """Shows or drops the C++ output that ``tf_conv3dt_cli`` held while the
    command was imported, per --verbose; nothing when ``native_output`` is
    None (``main`` called in-process, which leaves the descriptors alone)."""
    if native_output is not None:
        if args.verbose:
            native_output.show()
        else:
            native_output.drop()
