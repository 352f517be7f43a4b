"""The course's CIFAR-10 multi-layer perceptron 3072-1000-500-10 (ReLU), Adam with lr 3e-4,
global batch 16, 10 epochs.

    python examples/cifar10_mlp.py --data-dir ~/data/cifar10
    mpirun -n 4 python examples/cifar10_mlp.py --data-dir ~/data/cifar10

--data-dir holds CIFAR-10 in any form distnet reads (see the README); --npz PATH takes an .npz
with x_train, y_train, x_test, y_test instead.  --max-steps and --limit shorten the run.
"""
import argparse
import sys

import numpy as np

import distnet
from distnet import nn, optim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir")
parser.add_argument("--npz", help="an .npz with x_train, y_train, x_test, y_test instead of CIFAR-10")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--max-steps", type=int)
parser.add_argument("--limit", type=int, help="use only the first LIMIT train and test images")
args = parser.parse_args()

try:
    if args.npz:
        train, test = distnet.data.load_npz(args.npz)
    else:
        train = distnet.data.load_dataset("cifar10", "train", data_dir=args.data_dir)
        test = distnet.data.load_dataset("cifar10", "test", data_dir=args.data_dir)
except distnet.errors.UserError as exc:  # missing or damaged files: one line, exit 2
    print(f"cifar10_mlp: error: {exc}", file=sys.stderr)
    sys.exit(2)
if args.limit:
    train, test = train.subset(np.arange(args.limit)), test.subset(np.arange(min(args.limit, len(test))))

rng = np.random.default_rng(0)
model = nn.Sequential(nn.Flatten(),
                      nn.Linear(3 * 32 * 32, 1000, rng=rng), nn.ReLU(),
                      nn.Linear(1000, 500, rng=rng), nn.ReLU(),
                      nn.Linear(500, 10, init="xavier", rng=rng))
history = distnet.fit(model, train, loss=nn.CrossEntropyLoss(), optimizer=optim.Adam(model, lr=3e-4),
                      epochs=args.epochs, batch_size=16, max_steps=args.max_steps, test=test)
if distnet.distributed.init().rank == 0:
    print(f"test accuracy {history.final['accuracy'] * 100:.2f}% after {history.step} steps")
