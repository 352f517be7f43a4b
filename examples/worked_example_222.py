"""The 2-2-2 sigmoid network of the classic worked example (Matt Mazur, "A Step by Step
Backpropagation Example"): one forward pass, the gradients, one gradient-descent step.

    python examples/worked_example_222.py
    mpirun -n 2 python examples/worked_example_222.py     # the same numbers

Forward and backward are distnet.nn by hand; the step is distnet.fit on the one sample.
"""
import numpy as np

import distnet
from distnet import nn, optim


def network():
    hidden, output = nn.Linear(2, 2, dtype=np.float64), nn.Linear(2, 2, dtype=np.float64)
    hidden.weight.data[:] = [[0.15, 0.20], [0.25, 0.30]]  # w1 w2 / w3 w4
    hidden.bias.data[:] = 0.35
    output.weight.data[:] = [[0.40, 0.45], [0.50, 0.55]]  # w5 w6 / w7 w8
    output.bias.data[:] = 0.60
    return nn.Sequential(hidden, nn.Sigmoid(), output, nn.Sigmoid())


x, target = np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]])
say = print if distnet.distributed.init().rank == 0 else (lambda *args: None)

model = network()
squares = nn.MSELoss(reduction="sum")  # sum of (out - target)^2
out = model(x)
error = 0.5 * squares(out, target)  # E_total = 1/2 sum (target - out)^2
model.zero_grad()
model.backward(0.5 * squares.backward())
say(f"outputs            {out[0, 0]:.9f} {out[0, 1]:.9f}")
say(f"E_total            {error:.9f}")
say(f"dE/dw5..w8         {' '.join(f'{g:.9f}' for g in model[2].weight.grad.ravel())}")
say(f"dE/dw1..w4         {' '.join(f'{g:.9f}' for g in model[0].weight.grad.ravel())}")

# One step of gradient descent with learning rate 0.5 on E_total, through distnet.fit.  Its
# loss is the sum of squares, twice E_total, so lr 0.25 on it is the worked example's 0.5.
# (The worked example keeps the biases fixed; here they are trained too.)
trained = network()
distnet.fit(trained, distnet.data.ArrayDataset(x, target), loss=nn.MSELoss(reduction="sum"),
            optimizer=optim.SGD(trained, lr=0.25), batch_size=1, verbose=False)
say(f"w5..w8 after step  {' '.join(f'{w:.9f}' for w in trained[2].weight.data.ravel())}")
say(f"w1..w4 after step  {' '.join(f'{w:.9f}' for w in trained[0].weight.data.ravel())}")
after = 0.5 * distnet.evaluate(trained, distnet.data.ArrayDataset(x, target), loss=nn.MSELoss(reduction="sum"))["loss"]
say(f"E_total after step {after:.9f}")
