"""Held-out Dice of the tutorials' U-Net started by glorot_uniform or by checkerboard_free.

Tutorial 2's task and U-Net (``tf_conv3dt.examples``) with k4 s2 up-sampling
in both arms (the checkerboard-free start needs a kernel that is a multiple
of the stride; the tutorial's own k3 cannot take it), trained the same way
for each seed: the seed sets the initial weights and the batch order, the
data is the same. Records the held-out Dice after every epoch, since a
start matters most early on.

    python benchmarks/bench_initializer.py

It writes its result to results/initializer/ (``common.result_path``).
"""

import argparse

import numpy as np

from tf_conv3dt import examples
from tf_conv3dt._keras import keras

import common

SIZE, FILTERS = 19, (8, 16, 32)
INITIALIZERS = ("glorot_uniform", "checkerboard_free")


def held_out_dice_by_epoch(initializer, seed, data, epochs):
    x, y, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = examples.unet(SIZE, FILTERS, upsampling_kernel=4, kernel_initializer=initializer)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=examples.soft_dice_crossentropy,
                  metrics=[examples.dice])
    history = model.fit(x, y, validation_data=(x_test, y_test), epochs=epochs, batch_size=8,
                        verbose=0)
    return [float(value) for value in history.history["val_dice"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--held-out", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    common.add_result_arguments(parser, "initializer")
    args = parser.parse_args()
    volumes, masks, _ = examples.shapes_dataset(args.train + args.held_out, SIZE, seed=0)
    data = (volumes[:args.train], masks[:args.train], volumes[args.train:], masks[args.train:])
    runs = {initializer: {} for initializer in INITIALIZERS}
    for seed in args.seeds:
        for initializer in INITIALIZERS:  # the arms alternate, so drift hits both
            dice = held_out_dice_by_epoch(initializer, seed, data, args.epochs)
            runs[initializer][seed] = dice
            print(f"seed {seed} {initializer:<18} held-out Dice by epoch: "
                  + " ".join(f"{value:.3f}" for value in dice), flush=True)
    print(f"\n{'initializer':<18} " + " ".join(
        f"{'epoch ' + str(epoch + 1):>14}" for epoch in range(args.epochs)))
    for initializer, by_seed in runs.items():
        table = np.array(list(by_seed.values()))
        print(f"{initializer:<18} " + " ".join(
            f"{mean:.3f} +- {std:.3f}" for mean, std in zip(table.mean(0), table.std(0))))
    result = dict(common.run_record(),
                  arguments={k: v for k, v in vars(args).items() if k not in ("out", "label")},
                  held_out_dice_by_epoch=runs)
    common.write_result(result, common.result_path(args.out, args.label))


if __name__ == "__main__":
    main()
