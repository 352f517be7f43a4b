"""Skip connections: ``Residual(block, shortcut=None)`` computes block(x) + shortcut(x).

The input feeds two paths, so by the chain rule its gradient is the sum of the two paths'
input gradients; each path accumulates its own parameter gradients as usual.  The shortcut
is the identity when None (a plain ResNet basic block), or any module, e.g. a strided 1x1
Conv2d with BatchNorm2d where the block changes the shape.  The block's and shortcut's
parameters and buffers are its children's, so an enclosing Sequential puts them in its flat
arrays (block first, then shortcut) like any other layer's.
"""
from __future__ import annotations

from .module import Module


class Residual(Module):
    def __init__(self, block: Module, shortcut: Module | None = None):
        self.block, self.shortcut = block, shortcut

    def children(self):
        return [self.block] + ([self.shortcut] if self.shortcut is not None else [])

    def forward(self, x):
        skip = x if self.shortcut is None else self.shortcut(x)
        out = self.block(x)
        if out.shape != skip.shape:
            raise ValueError(f"Residual: block gives {out.shape} but the shortcut gives {skip.shape}")
        return out + skip

    def backward(self, grad_out):
        grad_in = self.block.backward(grad_out)
        grad_skip = grad_out if self.shortcut is None else self.shortcut.backward(grad_out)
        return grad_in + grad_skip

    def __repr__(self):
        block = "\n".join("  " + line for line in repr(self.block).splitlines())
        short = "identity" if self.shortcut is None else repr(self.shortcut)
        return f"Residual(\n{block}\n  shortcut={short}\n)"
