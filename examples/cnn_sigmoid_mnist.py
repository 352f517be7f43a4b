"""The course's two-convolution sigmoid CNN on MNIST: conv 16@5x5 -> sigmoid -> max-pool 2,
conv 32@5x5 -> sigmoid -> max-pool 2, FC 128 -> sigmoid, FC 10; plain SGD with lr 0.01,
global batch 64, 10 epochs.

    python examples/cnn_sigmoid_mnist.py
    mpirun -n 4 python examples/cnn_sigmoid_mnist.py

The course's source claims 99.07% test accuracy; this prints what it reaches (89.05% seen
with mpirun -n 2: 11.35% after epoch 1, 79.95% after epoch 5).
--max-steps and --limit shorten the run.
"""
import argparse

import numpy as np

import distnet
from distnet import nn, optim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir")
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--max-steps", type=int)
parser.add_argument("--limit", type=int, help="use only the first LIMIT train and test images")
args = parser.parse_args()

train = distnet.data.load_dataset("mnist", "train", data_dir=args.data_dir)
test = distnet.data.load_dataset("mnist", "test", data_dir=args.data_dir)
if args.limit:
    train, test = train.subset(np.arange(args.limit)), test.subset(np.arange(args.limit))

rng = np.random.default_rng(0)
model = nn.Sequential(nn.Conv2d(1, 16, 5, init="xavier", rng=rng), nn.Sigmoid(), nn.MaxPool2d(2),   # 16@24x24 -> 12x12
                      nn.Conv2d(16, 32, 5, init="xavier", rng=rng), nn.Sigmoid(), nn.MaxPool2d(2),  # 32@8x8 -> 4x4
                      nn.Flatten(),
                      nn.Linear(32 * 4 * 4, 128, init="xavier", rng=rng), nn.Sigmoid(),
                      nn.Linear(128, 10, init="xavier", rng=rng))
history = distnet.fit(model, train, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(model, lr=0.01),
                      epochs=args.epochs, batch_size=64, max_steps=args.max_steps, test=test)
if distnet.distributed.init().rank == 0:
    print(f"test accuracy {history.final['accuracy'] * 100:.2f}% after {history.step} steps")
