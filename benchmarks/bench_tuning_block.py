"""Tuning on a block of the input against tuning at the whole size: cost and choice.

For each benchmark case (``common.CASES``) whose forward pass
takes more than tuning's ``Knobs.max_timed_products`` multiply-adds, times the
eligible lowerings with ``tuning.measure.lowerings`` twice, at the case's own size
and on the block ``tuning.measure.timed_shape`` gives it, and records the seconds
each took (the rounds' budget whole: no time held back for a pair, which
is not timed here), every candidate's forward / gradient ms, and tuning's proposed
forward and gradient lowerings (``tuning.policy.choose``, from the separate times,
with the gradients ``tuning.policy.ranked_gradients`` lets the block rank: tuning
times a pair together before it keeps it), with what the block's
choice costs at the whole size against the whole size's fastest: a
training step (forward plus gradient) and the forward alone. The result goes
to results/tuning_block/, labelled by the CPU configuration, the ISA class
oneDNN runs and the dtype (``common.result_path``):

    python benchmarks/bench_tuning_block.py [--dtype bfloat16]
"""

import argparse
import dataclasses
import time

import tensorflow as tf

from tf_conv3dt import ops, shapes
from tf_conv3dt.ops import cpu, lowerings
from tf_conv3dt.ops.call import Call
from tf_conv3dt.ops.tuning import measure, policy

import common


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    common.add_result_arguments(parser, "tuning_block")
    args = parser.parse_args()
    dtype = tf.as_dtype(args.dtype)
    rows = []
    for case in common.CASES:
        shape, filters, kernel, stride, padding = case
        kernel_shape, strides = (kernel,) * 3 + (filters, shape[4]), (stride,) * 3
        whole = tuple(shape[1:4])
        output = [shapes.output_length(n, kernel, stride, padding) for n in whole]
        block, block_output = measure.timed_shape(shape[0], shape[1:], kernel_shape, strides,
                                                  output)
        if block == whole:
            continue
        rule = ops.resolve_implementation("auto", kernel_shape[:3], strides, dtype)
        call = Call(dtype.name, "channels_last", shape, kernel_shape, strides, padding,
                    (1, 1, 1), tuple(output))
        candidates = [name for name in lowerings.names(auto=True)
                      if not lowerings.get(name).untimed(call)]
        timed = {}
        for name, (spatial, lengths) in (("whole", (whole, output)),
                                         ("block", (block, block_output))):
            started = time.perf_counter()
            timed_call = dataclasses.replace(call, input_shape=(shape[0], *spatial, shape[4]),
                                             output_lengths=tuple(lengths))
            ms, _ = measure.lowerings(timed_call, [rule, *[c for c in candidates if c != rule]])
            gradients = policy.ranked_gradients(ms, call, spatial != whole)
            timed[name] = dict(seconds=time.perf_counter() - started, spatial=list(spatial),
                               ms=ms, choice=policy.choose(ms, rule, gradients))
        whole_ms = timed["whole"]["ms"]
        forward, gradient = timed["block"]["choice"]
        fastest = [min(ms[step] for ms in whole_ms.values()) for step in (0, 1)]
        row = dict(case=common.case_label(case), rule=rule,
                   **timed,
                   block_choice_over_fastest=(whole_ms[forward][0] + whole_ms[gradient][1])
                   / sum(fastest),
                   block_forward_choice_over_fastest=whole_ms[forward][0] / fastest[0])
        rows.append(row)
        print(f"{row['case']:<36} whole {timed['whole']['seconds']:5.2f} s "
              f"{'/'.join(timed['whole']['choice'])}, block {tuple(block)} "
              f"{timed['block']['seconds']:5.2f} s {'/'.join(timed['block']['choice'])}, "
              f"block's choices at the whole size {row['block_choice_over_fastest']:.3f}x "
              f"/ {row['block_forward_choice_over_fastest']:.3f}x", flush=True)
    result = dict(common.run_record(), dtype=args.dtype,
                  max_timed_products=policy.KNOBS.max_timed_products, rows=rows)
    if rows:
        result["worst"] = {key: max(row[key] for row in rows) for key in (
            "block_choice_over_fastest", "block_forward_choice_over_fastest")}
    common.write_result(result, common.result_path(
        args.out, cpu.cpu_configuration(), cpu.cpu_isa(), args.dtype, args.label))


if __name__ == "__main__":
    main()
