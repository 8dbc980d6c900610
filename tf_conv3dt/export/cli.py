"""Export a Keras model (default: the reference example) to every deployment artifact.

Writes under --out: model.keras, a TF Serving SavedModel version under
serving/<name>/<version>/ (with warmup records), TFLite files (float32,
float16, dynamic-range, full-integer int8), model.onnx and report.json,
then prints the verification report. Every flag and the destination are checked before
anything is written; the artifacts are verified before they are published,
each under its final name only when complete; an existing serving version
is never touched.

exit status:
  0    every artifact written and within its tolerance
  1    an artifact exceeded its tolerance: nothing published (report.json says which)
  2    a bad flag or input file, or a destination that cannot be written
  70   an internal error (a defect; the traceback is printed)
  129  hung up (SIGHUP): nothing published
  130  interrupted (Ctrl-C, SIGINT): nothing published
  143  terminated (SIGTERM, as schedulers stop a job): nothing published
A signal that arrives while the artifacts are being moved to their final
names waits until they all are, then ends the export with its status.
"""

import argparse
import os
import signal
import sys
import time
import traceback
import warnings

from tf_conv3dt import command_line

# The library's argument names, as (flag, attribute of the parsed arguments).
FLAGS = {"out_dir": ("--out", "out"), "model": ("--model", "model"),
         "name": ("--name", "name"), "version": ("--version", "version"),
         "formats": ("--formats", "formats"),
         "calibration": ("--calibration-data", "calibration_data"),
         "batch_size": ("--batch-size", "batch_size"),
         "implementation": ("--implementation", "implementation"),
         "tolerances": ("--tolerance", "tolerance")}


def _mode_tolerance(text):
    """``MODE=NUMBER`` as (mode, float); the library checks both."""
    mode, _, number = text.partition("=")
    try:
        return mode, float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MODE=NUMBER (int8=0.25), got {text!r}") \
            from None


def _typed_tolerance(text):
    _mode_tolerance(text)
    return text


def parse_args(argv):
    from tf_conv3dt.export import formats, job
    from tf_conv3dt.export.formats.tflite import TOLERANCES
    from tf_conv3dt.export.staging import LAST_VERSION

    parser = command_line.Parser(prog="tf-conv3dt-export",
                                 description=__doc__.splitlines()[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created if missing; must be writable)")
    parser.add_argument("--model", metavar="PATH",
                        help="a .keras model, loaded in safe mode (default: the reference "
                             "example, Input (10, 8, 12, 128) -> Conv3DTranspose(32, 2, 2, relu))")
    parser.add_argument("--name", default="conv3dt",
                        help="TF Serving model name, a directory name (default: conv3dt)")
    parser.add_argument("--version", type=command_line.ascii_integer, metavar="N",
                        help=f"serving version to write, 1 to {LAST_VERSION}; refused if it "
                             "exists (default: the next free integer)")
    parser.add_argument("--formats", default=",".join(formats.defaults()),
                        help=f"comma-separated subset of {','.join(formats.names())} "
                             "(default: all but " + ", ".join(
                                 format_.name for format_ in formats.every()
                                 if not format_.by_default) + "; " + "; ".join(
                                 f"{format_.name} needs the {format_.extra} extra"
                                 for format_ in formats.every() if format_.extra) + ")")
    parser.add_argument("--calibration-data", metavar="FILE.npy",
                        help="int8 calibration samples, shape (n, *input_shape), finite; "
                             "default: synthetic uniform [0, 1) data, with a warning")
    parser.add_argument("--batch-size", type=command_line.ascii_integer, default=1, metavar="N",
                        help="static batch size of the TFLite files, or with --dynamic-batch "
                             "the batch they are verified and timed at (default: 1)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="TFLite files that take any batch (shape signature -1: "
                             "interpreter.resize_tensor_input, then allocate_tensors)")
    parser.add_argument("--implementation", choices=job.implementations(),
                        help="lowering traced into every file that traces the model; "
                             "tuned: the SavedModel's auto layers timed on this machine at "
                             "--batch-size (run it on one of the kind that will serve), the "
                             "other files at their default (default: " + ", ".join(
                                 f"{format_.name} {format_.lowering.describe()}"
                                 for format_ in formats.every() if format_.lowering) + ")")
    parser.add_argument("--tolerance", type=_typed_tolerance, action="append", metavar="MODE=X",
                        help="replace a TFLite mode's tolerance (relative, as in the report), "
                             "e.g. int8=0.25 for a deep network judged by its task metric; "
                             "repeatable (defaults: " + ", ".join(
                                 f"{mode}={v['tolerance']:g}" for mode, v in TOLERANCES.items())
                        + ")")
    command_line.add_output_flags(parser)
    return parser.parse_args(argv)


# What each signal that stops an export is called, in the one line it prints.
STOPPING_SIGNALS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated",
                    signal.SIGHUP: "hung up"}


def main(argv=None, native_output=None):
    """Runs the export; returns the exit status (see the module docstring).
    ``native_output``: the C++ output ``tf_conv3dt_cli`` holds, if it started
    the command."""
    args = parse_args(argv)
    command_line.route_native_output(args, native_output)
    received = []
    publishing = []

    def on_signal(signum, frame):
        received.append(signum)
        if not publishing:
            raise KeyboardInterrupt

    def say(line, publishing_begins=False):
        # TensorFlow can swallow a KeyboardInterrupt raised inside its own
        # calls; every progress line (the last one comes before publishing)
        # raises it again.
        if received and not publishing:
            raise KeyboardInterrupt
        if publishing_begins:  # a signal now waits for the renames
            publishing.append(True)
        if not args.quiet:
            print(line, flush=True)

    started = time.perf_counter()
    report = None
    previous = {signum: signal.signal(signum, on_signal) for signum in STOPPING_SIGNALS}
    try:
        report = _export(args, say)
    except KeyboardInterrupt:
        received.append(signal.SIGINT)  # a Ctrl-C that came before the handler, or TF's own
    except Exception as error:  # noqa: BLE001 - each class has its exit status
        if not received:
            return _fail(error, args)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        signum = received[0]
        outcome = ("everything was published first" if report and report["published"]
                   else "nothing was published")
        print(f"error: {STOPPING_SIGNALS[signum]}; {outcome}", file=sys.stderr)
        return 128 + signum
    say(f"finished in {time.perf_counter() - started:.1f}s; report: "
        f"{os.path.join(args.out, 'report.json')}")
    return 0 if report["published"] else 1


def _export(args, say):
    """Runs the export and prints its report; returns the report."""
    say("importing TensorFlow and tf_conv3dt")
    import numpy as np

    from tf_conv3dt import export

    calibration = None
    if args.calibration_data:
        try:
            calibration = np.load(args.calibration_data, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            raise export.ExportError(f"could not be read as a .npy array: {error}",
                                     "calibration", args.calibration_data) from None
    if args.model:
        say(f"loading {args.model} (safe mode)")
        model = export.load_model(args.model)
    else:
        say("building the reference model")
        model = export.reference_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if args.quiet:
            warnings.simplefilter("ignore")
        warnings.showwarning = _one_line_warning
        report = export.export_model(
            model, args.out, name=args.name, version=args.version, formats=args.formats,
            calibration=calibration, batch_size=args.batch_size,
            implementation=args.implementation, dynamic_batch=args.dynamic_batch,
            tolerances=None if args.tolerance is None else dict(map(_mode_tolerance,
                                                                      args.tolerance)),
            progress=lambda step: say(str(step), step.publishing))
    say(export.format_report(report))
    return report


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    """A warning for the user (synthetic calibration, say), without the source line."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _fail(error, args):
    """Exit status 2 and ``error: <flag> <value>: <problem>`` for the
    library's errors (the value as typed), or the error's own text for a
    filesystem error; 70 and the traceback for anything else (a defect)."""
    from tf_conv3dt.export import ExportError

    if isinstance(error, ExportError) and error.argument in FLAGS:
        flag, attribute = FLAGS[error.argument]
        value = getattr(args, attribute)
        if isinstance(value, list):  # a repeated flag: its values as typed
            value = " ".join(value)
        message = f"{flag}{'' if value is None else ' ' + repr(value)}: {error.problem}"
    elif isinstance(error, (ExportError, OSError)):
        message = str(error)
    else:
        traceback.print_exception(error)
        return 70
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 2
