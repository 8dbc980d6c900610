"""ExportError, naming the argument and value at fault, and which failures are failed writes."""

import errno
import os

import tensorflow as tf


class ExportError(ValueError):
    """An export that cannot go ahead; the message is meant for the user.

    ``argument`` and ``value`` name the argument of ``export_model`` at fault
    (None when the problem is not one argument's), ``problem`` says what is
    wrong with it.
    """

    def __init__(self, problem, argument=None, value=None):
        self.problem, self.argument, self.value = problem, argument, value
        super().__init__(problem if argument is None else f"{argument}={value!r}: {problem}")


# What a filesystem that runs out of space or quota, fails or turns read-only
# under a running export gives its writes.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG)


def write_failure(error):
    """The OS reason (``os.strerror``) when ``error`` is a failed write:
    an OSError with one of ``WRITE_ERRNOS``, or an error of TensorFlow's own
    file writes or of the fresh-process check whose message carries that
    reason. None for any other error."""
    if isinstance(error, OSError):
        return os.strerror(error.errno) if error.errno in WRITE_ERRNOS else None
    if not isinstance(error, (tf.errors.OpError, ExportError)):
        return None
    return next((os.strerror(code) for code in WRITE_ERRNOS if os.strerror(code) in str(error)),
                None)


def unwritable(out_dir, error):
    """The ExportError of ``out_dir`` for an OSError met preparing or writing it."""
    return ExportError(f"cannot be written: {error.strerror or error}"
                       f"{': ' + error.filename if error.filename else ''}", "out_dir", out_dir)
