"""The serving forward of each lowering: what a SavedModel's fixed lowering costs on each CPU kind.

An export traces one lowering into the SavedModel, for a serving CPU it
cannot see. This times the ``serving_default`` signature of SavedModels the
export writes (``serving.write_version``), loaded back with
``tf.saved_model.load`` as the model server loads them, one per lowering,
at batch 1 and 8, in every CPU configuration this machine offers (each in a
child process; ``common.CONFIGURATIONS``), interleaved in
rounds. Models: the export's reference model (k2 s2), the tutorials' U-Net
(k3 s2 up-sampling to its skips' sizes) and a decoder with a k3 s1 and a k4
s2 layer. It ends with each lowering's worst ratio to the fastest over every
model, batch and configuration: the export default is the lowering whose
worst is lowest. The result goes to results/serving/ (``common.result_path``):

    python benchmarks/bench_serving.py [--configurations default avx2 onednn-avx2]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import common

BATCHES = (1, 8)


def models():
    """{name: model} of the three served models."""
    from tf_conv3dt import Conv3DTranspose, examples
    from tf_conv3dt._keras import keras
    from tf_conv3dt.export import reference_model

    inputs = keras.Input((16, 16, 16, 32), name="features")
    x = Conv3DTranspose(32, 3, 1, padding="same", activation="relu", name="refine")(inputs)
    outputs = Conv3DTranspose(16, 4, 2, padding="same", name="up")(x)
    return {"reference k2 s2 (10, 8, 12, 128)->32": reference_model(),
            "unet(32) k3 s2 decoder": examples.unet(32),
            "decoder k3 s1 + k4 s2 (16^3, 32)": keras.Model(inputs, outputs, name="decoder")}


def run_one(repeats):
    """This process's configuration: ``{model: {batch: {lowering: ms}}}``."""
    import numpy as np
    import tensorflow as tf

    from tf_conv3dt.export import serving
    from tf_conv3dt.export.signature import ForcedLowering
    from tf_conv3dt.ops import lowerings

    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, model in models().items():
            signatures = {}
            for lowering in lowerings.names(auto=True):
                path = os.path.join(scratch, f"{model.name}-{lowering}")
                serving.write_version(model, path, model.name, ForcedLowering(lowering))
                signatures[lowering] = tf.saved_model.load(path).signatures["serving_default"]
            shape = tuple(model.inputs[0].shape[1:])
            rows[name] = {}
            for batch in BATCHES:
                x = tf.constant(np.random.default_rng(0).standard_normal((batch, *shape)),
                                tf.float32)
                # By the input's name, as the model server calls it (a
                # positional call costs TensorFlow ~3 ms more per call).
                calls = {lowering: (lambda f=f: [t.numpy() for t in f(**{
                    next(iter(f.structured_input_signature[1])): x}).values()])
                    for lowering, f in signatures.items()}
                rows[name][batch] = common.interleaved_ms(calls, repeats)
                print(f"{name:<38} batch {batch}: " + ", ".join(
                    f"{lowering} {ms:.2f} ms" for lowering, ms in rows[name][batch].items()),
                    flush=True)
    return rows


def worst_ratios(results):
    """{lowering: (worst ms / fastest ms, where)} over every configuration, model and batch."""
    worst = {}
    for configuration, run in results.items():
        for model, batches in run["rows"].items():
            for batch, times in batches.items():
                fastest = min(times.values())
                for lowering, ms in times.items():
                    ratio = ms / fastest
                    if ratio > worst.get(lowering, (0,))[0]:
                        worst[lowering] = (ratio, f"{configuration}, {model}, batch {batch}")
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configurations", nargs="+", choices=sorted(common.CONFIGURATIONS),
                        default=["default", "avx2", "onednn-avx2"])
    parser.add_argument("--repeats", type=int, default=30)
    common.add_result_arguments(parser, "serving")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.repeats)))
        return
    results = {}
    for configuration in args.configurations:
        environment = common.CONFIGURATIONS[configuration]
        print(f"=== {configuration}: "
              f"{' '.join(f'{k}={v}' for k, v in environment.items()) or 'as is'}", flush=True)
        process = subprocess.run(
            [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
            env={**os.environ, **environment, "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=subprocess.PIPE, text=True, check=True)
        lines = process.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        results[configuration] = {"environment": environment, "rows": json.loads(lines[-1])}
    worst = worst_ratios(results)
    print("\nworst ratio to the fastest lowering:")
    for lowering, (ratio, where) in sorted(worst.items(), key=lambda item: item[1][0]):
        print(f"  {lowering:<9} {ratio:5.2f}x  ({where})")
    result = dict(common.run_record(), repeats=args.repeats, configurations=results,
                  worst={lowering: ratio for lowering, (ratio, _) in worst.items()})
    common.write_result(result, common.result_path(args.out, args.label))


if __name__ == "__main__":
    main()
