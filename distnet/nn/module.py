"""Parameters, the Module base class and Sequential.

Why a flat buffer: Sequential moves every parameter of its layers into one contiguous
array (and every gradient into another), leaving each layer's ``Parameter.data`` and
``Parameter.grad`` as *views* into them.  The distributed layer can then allreduce all
gradients with one call on one buffer, the optimizer can update the whole model with a
handful of vectorised operations, and a checkpoint is a single vector.  Layers never notice:
they always read ``self.weight.data`` and accumulate into ``self.weight.grad``.

Non-trainable state (BatchNorm's running statistics) is handled the same way: a module
lists it in ``own_buffers()`` as (attribute name, array) pairs, and Sequential gathers every
buffer into ``flat_buffers`` and rebinds each attribute to a view of it, so broadcast and
checkpoints move one more vector.  A module therefore updates its buffers IN PLACE
(``self.running_mean *= ...``); rebinding the attribute would detach it from the model.
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
    # True when forward (backward) returns a new array that the module neither keeps nor
    # shares, so the next layer may overwrite it in place (see Sequential.forward).
    fresh_output = False
    fresh_input_grad = False

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad_out):  # pragma: no cover - abstract
        raise NotImplementedError

    def children(self) -> list["Module"]:
        return []

    def modules(self):
        """This module and all its descendants, depth first (pre-order), in a fixed order.

        The position of a module in this sequence is its "layer number", which keys its
        random stream (see ``randomness.set_sample_context``)."""
        yield self
        for child in self.children():
            yield from child.modules()

    def own_buffers(self) -> list[tuple[str, np.ndarray]]:
        """Non-trainable arrays held directly by this module, as (attribute name, array).

        The array must be ``getattr(self, name)``: Sequential rebinds that attribute to a
        view of its flat buffer, so the module must update it in place."""
        return []

    def buffers(self) -> list[np.ndarray]:
        """All buffers, in the order of ``modules()`` (own first, then each child's)."""
        return [array for _, array in self._named_buffers()]

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

    def _named_buffers(self) -> list[tuple[str, np.ndarray]]:
        return [(name, array) for module in self.modules() for name, array in module.own_buffers()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters ("{i}.{name}"), then of the buffers ("buffer.{j}.{name}").

        A model without buffers gets exactly the keys it always had."""
        state = {f"{i}.{p.name}": p.data.copy() for i, p in enumerate(self.parameters())}
        for j, (name, array) in enumerate(self._named_buffers()):
            state[f"buffer.{j}.{name}"] = array.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy a ``state_dict()`` back in place (positional: parameters, then buffers)."""
        targets = [p.data for p in self.parameters()] + self.buffers()
        if len(state) != len(targets):
            raise ValueError(f"state has {len(state)} arrays, model has {len(targets)} "
                             "parameters and buffers")
        for (key, value), target in zip(state.items(), targets):
            if value.shape != target.shape:
                raise ValueError(f"{key}: shape {value.shape} does not match {target.shape}")
        for (key, value), target in zip(state.items(), targets):
            target[...] = value


class Sequential(Module):
    """Layers applied in order; owns the model's flat parameter, gradient and buffer arrays.

    A Sequential nested in another (directly or inside a Residual) has its parameters and
    buffers at consecutive positions of the outer one's, so the outer one re-points the
    inner one's flat arrays at the matching slices: one copy of the state, and an inner
    ``zero_grad`` still clears the right gradients.
    """

    def __init__(self, *layers: Module):
        self.layers = list(layers)
        params = self.parameters()
        buffers = self._named_buffers()
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
        self.flat_buffers = np.empty(sum(a.size for _, a in buffers), dtype=dtype)
        offset = 0
        for module in self.modules():
            for name, array in module.own_buffers():
                n = array.size
                self.flat_buffers[offset:offset + n] = array.ravel()
                setattr(module, name, self.flat_buffers[offset:offset + n].reshape(array.shape))
                offset += n
        self._adopt_nested()
        self.input_grad = True
        # Called as hook(layer_index) right after each layer's backward, when that layer's
        # gradients are final: lets a wrapper start communicating early (overlap).
        self.backward_hooks = []

    def _adopt_nested(self) -> None:
        """Point every nested Sequential's flat arrays at its slice of ours."""
        p_off = b_off = 0
        for module in self.modules():
            if isinstance(module, Sequential) and module is not self:
                n_p = sum(p.size for p in module.parameters())
                n_b = sum(a.size for a in module.buffers())
                module.flat_params = self.flat_params[p_off:p_off + n_p]
                module.flat_grads = self.flat_grads[p_off:p_off + n_p]
                module.flat_buffers = self.flat_buffers[b_off:b_off + n_b]
            p_off += sum(p.size for p in module.own_parameters())
            b_off += sum(a.size for _, a in module.own_buffers())

    def children(self):
        return self.layers

    def execution_order(self) -> list[int]:
        """Layer indices in the order forward runs them: each ReLU directly followed by a
        MaxPool2d runs after it instead of before.

        Max-pooling commutes with ReLU exactly (max(relu(a), relu(b)) = relu(max(a, b)),
        and the gradient goes to the same first maximum, times relu' of the same value), so
        results and gradients are unchanged, but the ReLU then works on the pooled map, a
        quarter of the size for 2x2 pooling.  Measured on the ReLU after cifar-cnn's second
        conv (32x32x32 at batch 64, one thread, CPU time, under load): forward + backward
        4.7 ms on the full map, ~1.2 ms on the pooled one.
        """
        from .activations import ReLU
        from .layers import MaxPool2d
        order, i, layers = [], 0, self.layers
        while i < len(layers):
            if i + 1 < len(layers) and type(layers[i]) is ReLU and type(layers[i + 1]) is MaxPool2d:
                order += [i + 1, i]
                i += 2
            else:
                order.append(i)
                i += 1
        return order

    def forward(self, x):
        """Run the layers in ``execution_order()``.

        A layer with an ``overwrite_input`` attribute (ReLU) may work in place when the
        layer before it says its output is ``fresh_output`` (a conv, linear or max-pool
        result that nothing else holds), which saves one array-sized allocation and pass.
        """
        self._order = order = self.execution_order()
        previous = None
        for index in order:
            layer = self.layers[index]
            overwrite = previous is not None and previous.fresh_output and hasattr(layer, "overwrite_input")
            if overwrite:
                layer.overwrite_input = True
            try:
                x = layer(x)
            finally:
                if overwrite:
                    layer.overwrite_input = False
            previous = layer
        return x

    def backward(self, grad_out):
        """Backpropagate through all layers, in the reverse of the forward's order.

        With ``self.input_grad = False`` (set by trainers, whose input is data) the first
        layer skips computing the gradient with respect to the input; returns None then.
        A layer with an ``overwrite_grad`` attribute (ReLU) may update the incoming gradient
        in place when the layer after it says its backward result is ``fresh_input_grad``.
        """
        order = getattr(self, "_order", None)
        if order is None or len(order) != len(self.layers):
            order = self.execution_order()
        later = None
        for index in reversed(order[1:]):
            layer = self.layers[index]
            overwrite = later is not None and later.fresh_input_grad and hasattr(layer, "overwrite_grad")
            if overwrite:
                layer.overwrite_grad = True
            try:
                grad_out = layer.backward(grad_out)
            finally:
                if overwrite:
                    layer.overwrite_grad = False
            later = layer
            for hook in self.backward_hooks:
                hook(index)
        first = self.layers[order[0]]
        skip = not self.input_grad and hasattr(first, "compute_input_grad")
        if skip:
            first.compute_input_grad = False
        try:
            grad_in = first.backward(grad_out)
        finally:
            if skip:
                first.compute_input_grad = True
        for hook in self.backward_hooks:
            hook(order[0])
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
