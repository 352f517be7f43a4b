"""Named model builders.  Each takes the dataset's input shape, so one name fits MNIST
(1x28x28) and CIFAR-10 (3x32x32) alike; sizes of the fully-connected layers are derived
from the shapes rather than hard-coded."""
from __future__ import annotations

import numpy as np

from .activations import ReLU
from .kernels import output_size
from .layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, Scale
from .module import Sequential
from .normalization import BatchNorm2d
from .residual import Residual
from .whitening import PatchWhitening


class _Builder:
    """Tracks the running (C, H, W) shape while layers are appended."""

    def __init__(self, input_shape, rng, dtype):
        self.shape = tuple(input_shape)
        self.rng, self.dtype = rng, dtype
        self.layers = []

    def conv(self, out_channels, k, padding=0):
        c, h, w = self.shape
        self.layers += [Conv2d(c, out_channels, k, padding=padding, rng=self.rng, dtype=self.dtype), ReLU()]
        self.shape = (out_channels, output_size(h, k, 1, padding), output_size(w, k, 1, padding))

    def pool(self, k=2):
        c, h, w = self.shape
        self.layers.append(MaxPool2d(k))
        self.shape = (c, output_size(h, k, k), output_size(w, k, k))

    def conv_bn(self, out_channels, k=3):
        """3x3 'same' conv without bias (BatchNorm's bias replaces it), BatchNorm, ReLU."""
        c, h, w = self.shape
        self.shape = (out_channels, h, w)
        return [Conv2d(c, out_channels, k, padding=k // 2, bias=False, rng=self.rng, dtype=self.dtype),
                BatchNorm2d(out_channels, dtype=self.dtype), ReLU()]

    def dense(self, *widths, num_classes, dropout=0.0):
        features = int(np.prod(self.shape))
        self.layers.append(Flatten())
        for width in widths:
            self.layers += [Linear(features, width, rng=self.rng, dtype=self.dtype), ReLU()]
            if dropout:
                self.layers.append(Dropout(dropout, rng=self.rng))
            features = width
        self.layers.append(Linear(features, num_classes, init="xavier", rng=self.rng, dtype=self.dtype))
        return Sequential(*self.layers)


def lenet5(b: _Builder, num_classes: int) -> Sequential:
    """LeNet-5 with ReLU and max-pooling; 'same' padding on the first conv for 28x28 input."""
    b.conv(6, 5, padding=2 if b.shape[1] == 28 else 0)
    b.pool()
    b.conv(16, 5)
    b.pool()
    return b.dense(120, 84, num_classes=num_classes)


def cnn2(b: _Builder, num_classes: int) -> Sequential:
    """conv 16@5x5 -> pool -> conv 32@5x5 -> pool -> FC 128 -> FC classes."""
    b.conv(16, 5)
    b.pool()
    b.conv(32, 5)
    b.pool()
    return b.dense(128, num_classes=num_classes)


def mlp(b: _Builder, num_classes: int) -> Sequential:
    """Fully connected (input)-1000-500-classes; 3072-1000-500-10 on CIFAR-10."""
    return b.dense(1000, 500, num_classes=num_classes)


def cifar_cnn(b: _Builder, num_classes: int) -> Sequential:
    """Small VGG-style net: two 3x3 conv blocks of 32 and 64 channels, then 128, dropout FC."""
    for width in (32, 64):
        b.conv(width, 3, padding=1)
        b.conv(width, 3, padding=1)
        b.pool()
    b.conv(128, 3, padding=1)
    b.pool()
    return b.dense(256, num_classes=num_classes, dropout=0.3)


def cifar_resnet(b: _Builder, num_classes: int, width: int = 32) -> Sequential:
    """A residual network in the layout of the fast-CIFAR-10 "ResNet-9" (Myrtle.ai, 2018),
    at half its width by default: channels width, 2w, 4w, 8w = 32, 64, 128, 256.

        prep    conv-bn-relu(w)                                   32x32
        layer1  conv-bn-relu(2w), maxpool 2, + Residual(2 x conv-bn-relu(2w))   16x16
        layer2  conv-bn-relu(4w), maxpool 2                       8x8
        layer3  conv-bn-relu(8w), maxpool 2, + Residual(2 x conv-bn-relu(8w))   4x4
        head    global max pool, Linear(8w, classes), logits x 0.125 (see layers.Scale)

    Why this layout: it was designed to reach 94% on CIFAR-10 in a few epochs; its few wide
    layers at small maps suit our GEMM-based convs.  Cost for 3x32x32 input, counted from the
    layer shapes (tests/test_nn_residual.py recounts it): 95.3 M multiply-adds = 190.5 MFLOP
    forward per image at width 32, ~3x that for a training step (forward + both backward
    GEMMs), 3.2x cifar-cnn's 29.7 M.  Width 16 costs a quarter (24.0 M MACs), width 64
    (the original) four times.  The residual adds need no projection: each keeps its shape.
    Measured UNDER LOAD (2 shared cores, load average ~2.7, one BLAS thread), a float32
    training step at batch 64: 640 ms (100 images/s per core) against cifar-cnn's 195 ms.
    """
    layers = b.conv_bn(width)

    def pool(k):
        c, h, w = b.shape
        b.shape = (c, output_size(h, k, k), output_size(w, k, k))
        return [MaxPool2d(k)]

    def residual(channels):
        return [Residual(Sequential(*b.conv_bn(channels), *b.conv_bn(channels)))]

    layers += b.conv_bn(2 * width) + pool(2) + residual(2 * width)
    layers += b.conv_bn(4 * width) + pool(2)
    layers += b.conv_bn(8 * width) + pool(2) + residual(8 * width)
    c, h, w = b.shape
    layers += [MaxPool2d((h, w)), Flatten(),
               Linear(c, num_classes, init="xavier", rng=b.rng, dtype=b.dtype), Scale(0.125)]
    b.shape = (c, 1, 1)
    return Sequential(*layers)


def cifar_fast(b: _Builder, num_classes: int, widths=(64, 256, 256)) -> Sequential:
    """The layout of Jordan's airbench (2024), the fastest published CIFAR-10 trainer
    (94% in ~10 epochs), without residual connections:

        whiten  PatchWhitening 2x2 (3 -> 24 channels, fixed from the data), ReLU   31x31
        block   conv 3x3 (w), maxpool 2, BatchNorm, ReLU, conv 3x3 (w), BatchNorm, ReLU
                for w = 64, 256, 256                                               15, 7, 3
        head    global max pool, Linear(256, classes) without bias, logits x 1/9

    Why: the whitened first layer gives the convs decorrelated inputs from the first step
    (see ``whitening``), and pooling right after each block's first conv puts BatchNorm and
    the ReLU on the pooled map, a quarter of the pixels.  The filters are set by
    ``initialise_from_data`` (the trainer does it); until then they are zero.  airbench uses
    GELU; ReLU is cheaper here.  Cost for 3x32x32 input, counted from the layer shapes:
    118.1 M multiply-adds = 236 MFLOP forward per image, 1.24x cifar-resnet.
    """
    c, h, w = b.shape
    layers = [PatchWhitening(c, 2, dtype=b.dtype), ReLU()]
    b.shape = (layers[0].out_channels, h - 1, w - 1)
    for width in widths:
        c, h, w = b.shape
        layers += [Conv2d(c, width, 3, padding=1, bias=False, rng=b.rng, dtype=b.dtype), MaxPool2d(2),
                   BatchNorm2d(width, dtype=b.dtype), ReLU()]
        b.shape = (width, output_size(h, 2, 2), output_size(w, 2, 2))
        layers += b.conv_bn(width)
    c, h, w = b.shape
    layers += [MaxPool2d((h, w)), Flatten(),
               Linear(c, num_classes, bias=False, init="xavier", rng=b.rng, dtype=b.dtype), Scale(1 / 9)]
    b.shape = (c, 1, 1)
    return Sequential(*layers)


MODELS = {"lenet5": lenet5, "cnn2": cnn2, "mlp": mlp, "cifar-cnn": cifar_cnn,
          "cifar-resnet": cifar_resnet, "cifar-fast": cifar_fast}


def build_model(spec: str, input_shape=(1, 28, 28), num_classes: int = 10, seed: int = 0,
                dtype=np.float32, **args) -> Sequential:
    """Build the model ``spec`` names, with weights drawn from ``seed`` (same seed, same weights).

    ``spec`` is a name in MODELS, or your own builder: ``path/to/file.py:function`` or
    ``package.module:function``, a function ``(input_shape, num_classes) -> Sequential``.  It
    also gets ``seed=`` (and ``dtype=``) when its signature takes them, and ``**args``.  The
    returned model carries ``model.origin = {"spec": spec, "args": args}`` (what a
    checkpoint records to rebuild it).  Any fault of a builder (no such file or function, it
    raises, it returns something that is not a model) is a ``UserError``, a ValueError."""
    from .model_spec import call_builder, resolve_builder

    if spec in MODELS:
        builder = _Builder(input_shape, np.random.default_rng(seed), dtype)
        model = MODELS[spec](builder, num_classes)
    elif ":" in str(spec):
        model = call_builder(spec, resolve_builder(spec), tuple(input_shape), num_classes,
                             seed=seed, dtype=dtype, args=args)
    else:
        from ..errors import UserError
        raise UserError(f"unknown model {spec!r}; choose from {', '.join(MODELS)}, or give "
                        f"path/to/file.py:function or package.module:function")
    model.origin = {"spec": str(spec), "args": dict(args)}
    return model
