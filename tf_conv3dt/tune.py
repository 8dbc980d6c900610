"""Time every Conv3DTranspose of a saved model on this machine, and keep the fastest lowerings.

Run it on the machine that will train (or serve) the model, before a long
run: each layer whose implementation is "auto" is timed with every exact
lowering tuning takes on this machine (ops.lowerings, less those untimed here), forward pass
and gradient, at --batch-size (the batch "auto"
assumes for a Keras model's graph, whose batch is unknown), and what runs
(the lowering fastest over both, or the fastest forward with the fastest
gradient where that pair, timed together, trains faster) goes into the
tuning cache (TF_CONV3DT_CACHE_DIR, else the user's cache
directory), which "auto" reads in every run where timing is on (the
default on a CPU; TF_CONV3DT_AUTOTUNE=0 switches it off, =1 on): a cached
configuration is not timed again. One row per
layer: its configuration, each candidate's forward / gradient
milliseconds, its training step's estimated peak memory and the peak
measured on the input it was timed on, and what runs.

exit status:
  0    every layer tuned (or fixed to one lowering by its configuration)
  2    a bad flag or model file
  70   an internal error (a defect; the traceback is printed)
  130  interrupted (Ctrl-C): what was tuned before is kept
"""

import argparse
import signal
import sys
import time
import traceback

from tf_conv3dt import command_line

POLICIES = ("mixed_float16", "mixed_bfloat16", "float32")


class TuneError(ValueError):
    """A model the command cannot tune, with the reason."""


def parse_args(argv):
    from tf_conv3dt.ops.tuning.policy import KNOBS

    nominal_batch = KNOBS.nominal_batch

    parser = command_line.Parser(prog="tf-conv3dt-tune", description=__doc__.splitlines()[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL.keras", help="the saved model (safe mode)")
    parser.add_argument("--batch-size", type=command_line.ascii_integer, default=nominal_batch,
                        metavar="N", help="the training batch per replica to time at "
                                          f"(default: {nominal_batch}, what auto assumes)")
    parser.add_argument("--policy", choices=POLICIES,
                        help="time in this Keras mixed-precision policy's compute dtype "
                             "(default: each layer's own)")
    command_line.add_output_flags(parser)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"argument --batch-size: must be at least 1, got {args.batch_size}")
    return args


def main(argv=None, native_output=None):
    """Tunes the model; returns the exit status (see the module docstring).
    ``native_output``: the C++ output ``tf_conv3dt_cli`` holds, if it started
    the command."""
    args = parse_args(argv)
    command_line.route_native_output(args, native_output)

    def say(line):
        if not args.quiet:
            print(line, flush=True)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    try:
        path = _tune(args, say)
    except KeyboardInterrupt:
        print("error: interrupted; the layers tuned before it are cached", file=sys.stderr)
        return 130
    except TuneError as error:
        print(f"error: MODEL {args.model!r}: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - a defect
        traceback.print_exception(error)
        return 70
    finally:
        signal.signal(signal.SIGINT, previous)
    say(f"finished in {time.perf_counter() - started:.1f}s; cache: {path}")
    return 0


def _tune(args, say):
    say("importing TensorFlow and tf_conv3dt")
    import tensorflow as tf

    from tf_conv3dt import Conv3DTranspose, model_file
    from tf_conv3dt._keras import keras
    from tf_conv3dt.ops import select, tuning

    say(f"loading {args.model} (safe mode)")
    try:
        with tuning.switched(False):  # tf_keras calls the layers while loading: time below
            model = model_file.load(args.model)
    except ValueError as error:
        raise TuneError(str(error)) from None
    layers = [layer for layer in _flattened(model) if isinstance(layer, Conv3DTranspose)]
    if not layers:
        raise TuneError("has no Conv3DTranspose layer")
    inputs = []
    for tensor in model.inputs:
        shape = tuple(tensor.shape)[1:]
        if None in shape:
            raise TuneError(f"an input's sizes are unknown ({tensor.shape}); tuning times "
                            "static shapes")
        inputs.append(tf.zeros((args.batch_size, *shape), tensor.dtype))
    dtype = keras.mixed_precision.Policy(args.policy).compute_dtype if args.policy else None
    say(f"timing {len(layers)} Conv3DTranspose layers at batch {args.batch_size}"
        f"{' in ' + dtype if dtype else ''}")
    with tuning.recording(dtype=dtype, batch=args.batch_size), select.recorded() as selections:
        model(inputs if len(inputs) > 1 else inputs[0], training=False)
    for layer in layers:
        say(_row(layer, next((selection for scope, selection in selections
                              if layer.name in scope.split("/")), None)))
    return tuning.current_cache().path


def _flattened(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _flattened(layer)


def _row(layer, selection):
    """One layer's line: name, then the configuration, each candidate's ms
    and what runs where it was timed, else what runs (``ops.select``)."""
    if selection.decision is None:
        return f"{layer.name}: not tuned, runs {selection.runs}"
    return f"{layer.name}: {selection.decision.describe()}"


if __name__ == "__main__":  # python -m tf_conv3dt.tune, as python -m tf_conv3dt_cli tune
    import tf_conv3dt_cli

    sys.exit(tf_conv3dt_cli.run("tune", sys.argv[1:]))
