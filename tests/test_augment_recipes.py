"""The CIFAR-10 recipe files in examples/: they parse through the real config parser, say
what the issue asks for, and start training (two steps on synthetic data instead of CIFAR)."""
import numpy as np
import pytest

from conftest import REPO, run_train
from distnet.config import parse_config
from distnet.data.augment import ImageAugment
from distnet.data.loader import GlobalBatchLoader
from distnet.data.synthetic import synthetic
from distnet.nn import build_model, initialise_from_data
from distnet.optim import make_optimizer, make_schedule

RECIPES = {name: REPO / "examples" / f"{name}.toml" for name in ("cifar10", "cifar10_long", "cifar10_resnet",
                                                                    "cifar10_mlp")}


@pytest.mark.parametrize("name", ["cifar10", "cifar10_long", "cifar10_resnet"])
def test_cifar_recipe_says_what_the_issue_asks(name):
    cfg = parse_config(["--config", str(RECIPES[name])])
    assert cfg.dataset == "cifar10" and cfg.optimizer == "nesterov"
    assert cfg.schedule in ("onecycle", "cosine") and cfg.label_smoothing > 0
    assert cfg.augment_crop > 0 and cfg.augment_flip and cfg.augment_shift == 0
    assert cfg.weight_decay > 0 and cfg.weight_decay_exclude == "bn-bias" and cfg.tta_flip
    assert cfg.batch_size % 2 == 0  # two ranks
    if name == "cifar10_resnet":
        assert cfg.model == "cifar-resnet" and cfg.augment_crop == 4
    else:  # the whitened network with airbench's settings
        assert cfg.model == "cifar-fast" and cfg.augment_crop == 2
        assert cfg.freeze_bn_scale and cfg.lookahead and cfg.bn_bias_lr_scale == 64


def test_mlp_recipe_is_the_course_recipe():
    cfg = parse_config(["--config", str(RECIPES["cifar10_mlp"])])
    assert (cfg.dataset, cfg.model, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == \
        ("cifar10", "mlp", "adam", 3e-4, 16, 10)
    assert cfg.schedule == "constant" and cfg.warmup_steps == 0 and cfg.augment_shift == 0
    model = build_model(cfg.model, (3, 32, 32), 10)
    widths = [layer.weight.data.shape for layer in model.layers if hasattr(layer, "weight")]
    assert widths == [(1000, 3072), (500, 1000), (10, 500)]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_pieces_work_on_cifar_shaped_data(name):
    """The recipe's model, optimizer, schedule and augmentation, built from the parsed file,
    take one step on 3x32x32 images and produce a finite loss."""
    from distnet.nn import CrossEntropyLoss

    cfg = parse_config(["--config", str(RECIPES[name])])
    data = synthetic("train", n=64, shape=(3, 32, 32))
    model = build_model(cfg.model, data.input_shape, 10, seed=cfg.seed)
    initialise_from_data(model, data.batch(np.arange(64))[0])  # what the trainer does first
    opt = make_optimizer(cfg.optimizer, model, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                         decay_exclude=cfg.weight_decay_exclude, bn_bias_lr_scale=cfg.bn_bias_lr_scale)
    schedule = make_schedule(cfg.schedule, cfg.lr, 1000, warmup_steps=cfg.warmup_steps)
    loader = GlobalBatchLoader(data, 16, cfg.seed, max_shift=cfg.augment_shift, augment=ImageAugment.from_config(cfg))
    x, y, _ = loader.batch(0, 0)
    assert x.shape == (16, 3, 32, 32)
    crit = CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    before = model.flat_params.copy()
    loss = crit(model(x), y)
    model.backward(crit.backward())
    opt.lr = schedule(0)
    opt.step()
    assert np.isfinite(loss) and not np.array_equal(before, model.flat_params)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_starts_training(tmp_path, name):
    """The file through the command line, with the data swapped for synthetic images and the
    batch made small: two optimizer steps and a final evaluation.  The networks with
    BatchNorm train without its scale (the cifar-fast files say so, the ResNet run is told):
    the scales must come out exactly 1 while the rest moved."""
    from distnet.optim import frozen_mask

    ck = tmp_path / "ck"
    extra = ["--freeze-bn-scale"] if name == "cifar10_resnet" else []
    r = run_train("--config", RECIPES[name], "--dataset", "synthetic", "--max-steps", "2", *extra,
                  "--batch-size", "16", "--eval-batch-size", "256", "--no-progress", "--checkpoint-dir", ck)
    assert r.returncode == 0, r.stderr
    assert "final test accuracy" in r.stdout
    with np.load(ck / "latest.npz", allow_pickle=False) as z:
        assert int(z["step"]) == 2
        params = z["params"]
    initial = build_model(parse_config(["--config", str(RECIPES[name])]).model, (1, 28, 28), 10, seed=0)
    assert not np.array_equal(params, initial.flat_params)
    if name != "cifar10_mlp":
        scales = frozen_mask(initial) == 1
        assert scales.sum() > 0
        np.testing.assert_array_equal(params[scales], 1.0)
