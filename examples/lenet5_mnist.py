"""LeNet-5 on MNIST (ReLU and max-pooling; 'same' padding on the first convolution, so that the
28x28 digits keep LeNet's 32x32 geometry), Adam with lr 1e-3, global batch 128.

    python examples/lenet5_mnist.py                 # MNIST ships inside distnet: no download
    mpirun -n 4 python examples/lenet5_mnist.py

--max-steps and --limit shorten the run.
"""
import argparse

import numpy as np

import distnet
from distnet import nn, optim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data-dir")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--max-steps", type=int)
parser.add_argument("--limit", type=int, help="use only the first LIMIT train and test images")
args = parser.parse_args()

train = distnet.data.load_dataset("mnist", "train", data_dir=args.data_dir)
test = distnet.data.load_dataset("mnist", "test", data_dir=args.data_dir)
if args.limit:
    train, test = train.subset(np.arange(args.limit)), test.subset(np.arange(args.limit))

rng = np.random.default_rng(0)
model = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2, rng=rng), nn.ReLU(), nn.MaxPool2d(2),   # 6@28x28 -> 14x14
                      nn.Conv2d(6, 16, 5, rng=rng), nn.ReLU(), nn.MaxPool2d(2),             # 16@10x10 -> 5x5
                      nn.Flatten(),
                      nn.Linear(16 * 5 * 5, 120, rng=rng), nn.ReLU(),
                      nn.Linear(120, 84, rng=rng), nn.ReLU(),
                      nn.Linear(84, 10, init="xavier", rng=rng))
history = distnet.fit(model, train, loss=nn.CrossEntropyLoss(), optimizer=optim.Adam(model, lr=1e-3),
                      epochs=args.epochs, batch_size=128, max_steps=args.max_steps, test=test, augment=2)
if distnet.distributed.init().rank == 0:
    print(f"test accuracy {history.final['accuracy'] * 100:.2f}% after {history.step} steps")
