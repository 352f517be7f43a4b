"""Parameters, the Module base class and Sequential.

Why a flat buffer: Sequential moves every parameter of its layers into one contiguous
array (and every gradient into another), leaving each layer's ``Parameter.data`` and
``Parameter.grad`` as *views* into them.  The distributed layer can then allreduce all
gradients with one call on one buffer, the optimizer can update the whole model with a
handful of vectorised operations, and a checkpoint is a single vector.  Layers never notice:
they always read ``self.weight.data`` and accumulate into ``self.weight.grad``.
"""
from __future__ import annotations

import numpy as np


class Parameter:
    """A trainable array and its gradient, in PyTorch's shapes."""

    __slots__ = ("data", "grad", "name")

    def __init__(self, data: np.ndarray, name: str = ""):
        self.data = data
        self.grad = np.zeros_like(data)
        self.name = name

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def __repr__(self):
        return f"Parameter({self.name or '?'}, shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class: ``module(x)`` runs forward, ``module.backward(g)`` returns dL/dx.

    ``backward`` *accumulates* parameter gradients (like PyTorch), so call ``zero_grad``
    between steps.  A layer caches what its backward needs during forward, so forward and
    backward must alternate.
    """

    training = True

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self) -> list["Module"]:
        return []

    def own_parameters(self) -> list[Parameter]:
        """Parameters held directly by this module (not by its children)."""
        return []

    def parameters(self) -> list[Parameter]:
        """All parameters, in a fixed order: own first, then each child's in order."""
        params = list(self.own_parameters())
        for child in self.children():
            params.extend(child.parameters())
        return params

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0)

    def train(self, mode: bool = True) -> "Module":
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        return {f"{i}.{p.name}": p.data.copy() for i, p in enumerate(self.parameters())}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        params = self.parameters()
        if len(state) != len(params):
            raise ValueError(f"state has {len(state)} arrays, model has {len(params)} parameters")
        for (key, value), p in zip(state.items(), params):
            if value.shape != p.data.shape:
                raise ValueError(f"{key}: shape {value.shape} does not match {p.data.shape}")
            p.data[...] = value


class Sequential(Module):
    """Layers applied in order; owns the model's flat parameter and gradient buffers."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)
        params = self.parameters()
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) > 1:
            raise ValueError(f"all parameters of a Sequential must share one dtype, got {dtypes}")
        dtype = dtypes.pop() if dtypes else np.float32
        total = sum(p.size for p in params)
        self.flat_params = np.empty(total, dtype=dtype)
        self.flat_grads = np.zeros(total, dtype=dtype)
        offset = 0
        for p in params:
            n = p.size
            self.flat_params[offset:offset + n] = p.data.ravel()
            p.data = self.flat_params[offset:offset + n].reshape(p.data.shape)
            p.grad = self.flat_grads[offset:offset + n].reshape(p.data.shape)
            offset += n
        self.input_grad = True
        # Called as hook(layer_index) right after each layer's backward, when that layer's
        # gradients are final: lets a wrapper start communicating early (overlap).
        self.backward_hooks = []

    def children(self):
        return self.layers

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_out):
        """Backpropagate through all layers.

        With ``self.input_grad = False`` (set by trainers, whose input is data) the first
        layer skips computing the gradient with respect to the input; returns None then.
        """
        for index in range(len(self.layers) - 1, 0, -1):
            grad_out = self.layers[index].backward(grad_out)
            for hook in self.backward_hooks:
                hook(index)
        first = self.layers[0]
        skip = not self.input_grad and hasattr(first, "compute_input_grad")
        if skip:
            first.compute_input_grad = False
        try:
            grad_in = first.backward(grad_out)
        finally:
            if skip:
                first.compute_input_grad = True
        for hook in self.backward_hooks:
            hook(0)
        return None if skip else grad_in

    def zero_grad(self) -> None:
        self.flat_grads.fill(0)

    def param_offsets(self) -> list[tuple[int, int]]:
        """(start, stop) of each parameter in the flat buffers, in parameters() order."""
        spans, offset = [], 0
        for p in self.parameters():
            spans.append((offset, offset + p.size))
            offset += p.size
        return spans

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
