#!/usr/bin/env python
"""Export a Keras model (default: the reference example) to every deployment artifact.

Writes under --out: model.keras, a TF Serving SavedModel version under
serving/<name>/<version>/ (with warmup records), TFLite files (float32,
float16, dynamic-range, full-integer int8) and report.json, then prints the
verification report. Every artifact appears under its final name only when
complete; an existing serving version is never touched.
"""

import argparse
import contextlib
import os
import sys
import time


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output directory (created if missing; must not be a file)")
    parser.add_argument("--model", metavar="PATH",
                        help="a .keras model, loaded in safe mode (default: the reference "
                             "example, Input (10, 8, 12, 128) -> Conv3DTranspose(32, 2, 2, relu))")
    parser.add_argument("--name", default="conv3dt",
                        help="TF Serving model name, a directory name (default: conv3dt)")
    parser.add_argument("--version", type=int, metavar="N",
                        help="serving version to write; refused if it exists (default: next integer)")
    parser.add_argument("--formats", default="keras,savedmodel,tflite",
                        help="comma-separated subset of keras,savedmodel,tflite (default: all)")
    parser.add_argument("--calibration-data", metavar="FILE.npy",
                        help="int8 calibration samples, shape (n, *input_shape); default: "
                             "synthetic uniform [0, 1) data, with a warning")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="static batch size of the TFLite files (default: 1)")
    parser.add_argument("--implementation", default="gemm", choices=("gemm", "native", "auto"),
                        help="lowering traced into the SavedModel and TFLite files (default: gemm)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    say = (lambda line: None) if args.quiet else (lambda line: print(line, flush=True))
    started = time.perf_counter()
    with _native_output_silenced(args.quiet):
        report, error = _export(args, say)
    if error:
        return _fail(error)
    say(f"finished in {time.perf_counter() - started:.1f}s; report: "
        f"{os.path.join(args.out, 'report.json')}")
    return 0 if report["all_within_tolerance"] else 1


def _export(args, say):
    """Runs the export; returns (report, None) or (None, a one-line error)."""
    say("importing TensorFlow and tf_conv3dt")
    import warnings

    import numpy as np

    from tf_conv3dt import export

    try:
        # export_model checks the formats, --out, --name, --version and
        # --batch-size before it writes anything.
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        calibration = None
        if args.calibration_data:
            try:
                calibration = np.load(args.calibration_data, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise export.ExportError(
                    f"--calibration-data {args.calibration_data!r} could not be read: {error}")
        if args.model:
            say(f"loading {args.model} (safe mode)")
            model = export.load_model(args.model)
        else:
            say("building the reference model")
            model = export.reference_model()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            report = export.export_model(
                model, args.out, name=args.name, version=args.version, formats=formats,
                calibration=calibration, batch_size=args.batch_size,
                implementation=args.implementation, log=say)
    except export.ExportError as error:
        return None, str(error).replace("\n", " ")
    say(export.format_report(report))
    return report, None


@contextlib.contextmanager
def _native_output_silenced(silenced):
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


def _fail(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
