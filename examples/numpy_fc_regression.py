"""The course's fully-connected NumPy network, on distnet: random data, N=64, D_in=1000, H=100,
D_out=10, no biases, ReLU, sum-of-squares loss, plain gradient descent with lr 1e-6 for 500
iterations (every iteration one full batch).

    python examples/numpy_fc_regression.py
    mpirun -n 2 python examples/numpy_fc_regression.py   # each rank takes 32 of the 64 rows

The course's source shows the loss falling from about 3e7 to about 2e-5; what this prints is
the loss at each 50th iteration, computed in the forward pass of that iteration.
"""
import argparse

import numpy as np

import distnet
from distnet import nn, optim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--iterations", type=int, default=500)
args = parser.parse_args()

N, D_in, H, D_out = 64, 1000, 100, 10
rng = np.random.default_rng(0)
x, y = rng.standard_normal((N, D_in)), rng.standard_normal((N, D_out))

model = nn.Sequential(nn.Linear(D_in, H, bias=False, dtype=np.float64), nn.ReLU(),
                      nn.Linear(H, D_out, bias=False, dtype=np.float64))
model[0].weight.data[:] = rng.standard_normal((D_in, H)).T  # the course's w1 ~ N(0, 1), (D_in, H)
model[2].weight.data[:] = rng.standard_normal((H, D_out)).T  # and w2, (H, D_out)

history = distnet.fit(model, distnet.data.ArrayDataset(x, y), loss=nn.MSELoss(reduction="sum"),
                      optimizer=optim.SGD(model, lr=1e-6), epochs=args.iterations, batch_size=N,
                      log_every=1, verbose=False)
if distnet.distributed.init().rank == 0:
    losses = [r["loss"] for r in history.records if r["event"] == "train"]
    for t, loss in enumerate(losses):
        if t % 50 == 0 or t == len(losses) - 1:
            print(f"iteration {t:3d}  loss {loss:.4e}")
