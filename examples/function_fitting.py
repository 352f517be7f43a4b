"""A two-layer ReLU network fits f(x) = sin x + 0.3 x^2 on [-3, 3] by mean squared error.

    python examples/function_fitting.py
    mpirun -n 2 python examples/function_fitting.py       # data-parallel, the same fit

Prints the test RMSE (aim: <= 0.05) and, when matplotlib is installed, writes a PNG of the
fit against the truth.
"""
import argparse

import numpy as np

import distnet
from distnet import nn, optim

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=60)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--png", default="function_fitting.png", help="where the plot goes ('' for none)")
args = parser.parse_args()


def f(x):
    return np.sin(x) + 0.3 * x ** 2


rng = np.random.default_rng(0)
x_train = rng.uniform(-3, 3, (4096, 1)).astype(np.float32)
x_test = np.linspace(-3, 3, 601, dtype=np.float32).reshape(-1, 1)
train = distnet.data.ArrayDataset(x_train, f(x_train))
test = distnet.data.ArrayDataset(x_test, f(x_test))

model = nn.Sequential(nn.Linear(1, args.hidden, rng=rng), nn.ReLU(), nn.Linear(args.hidden, 1, rng=rng))
adam = optim.Adam(model, lr=1e-2)
steps = args.epochs * (len(train) // 64)
history = distnet.fit(model, train, loss=nn.MSELoss(), optimizer=adam, epochs=args.epochs, batch_size=64,
                      schedule=optim.cosine(1e-2, steps), test=test, eval_every=0, verbose=False)

if distnet.distributed.init().rank == 0:
    print(f"test RMSE {np.sqrt(history.final['loss']):.4f} after {history.step} steps")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    if plt is not None and args.png:
        plt.plot(x_test[:, 0], f(x_test)[:, 0], label="sin x + 0.3 x²")
        plt.plot(x_test[:, 0], distnet.predict(model, x_test)[:, 0], "--", label="two-layer ReLU net")
        plt.legend()
        plt.savefig(args.png, dpi=100)
        print(f"plot written to {args.png}")
