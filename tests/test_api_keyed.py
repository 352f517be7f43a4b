"""fit with BatchNorm and keyed dropout on one process: exact resume, and the model leaves fit
as it came (no reducer left installed).  The multi-rank side is tests/mpi/test_fit_invariance.py."""
import numpy as np

import distnet
from distnet import nn, optim
from distnet.data import ArrayDataset


def model_with_dropout(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 6 * 6, 16, rng=rng), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Dropout(0.5, rng=rng), nn.Linear(16, 3, rng=rng))


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return ArrayDataset(rng.standard_normal((n, 1, 12, 12)).astype(np.float32), rng.integers(0, 3, n))


def run(ckdir, max_steps, resume=False, **kwargs):
    model = model_with_dropout()
    distnet.fit(model, data(), loss="cross-entropy", optimizer=optim.Adam(model, lr=0.01), epochs=2,
                batch_size=16, max_steps=max_steps, checkpoint_dir=ckdir, resume=resume, verbose=False, **kwargs)
    return model


def test_resume_with_dropout_and_batchnorm_is_bitwise_exact(tmp_path):
    """2 + 2 steps == 4 straight: keyed masks come back with the step, running statistics
    with the checkpoint's buffers."""
    for extra in ({}, {"deterministic": True}):
        straight = run(tmp_path / f"a{len(extra)}", 4, **extra)
        run(tmp_path / f"b{len(extra)}", 2, **extra)
        resumed = run(tmp_path / f"b{len(extra)}", 4, resume=True, **extra)
        np.testing.assert_array_equal(straight.flat_params, resumed.flat_params)
        np.testing.assert_array_equal(straight.flat_buffers, resumed.flat_buffers)
        assert not np.array_equal(straight.flat_buffers, model_with_dropout().flat_buffers)


def test_dropout_masks_depend_on_the_step_not_on_an_rng(tmp_path):
    """Two runs of the same seed agree bitwise although each Dropout got its own unseeded rng;
    another seed gives other masks (and other data order)."""
    def once(seed):
        rng = np.random.default_rng(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(144, 32, rng=rng), nn.ReLU(), nn.Dropout(0.5),
                              nn.Linear(32, 3, rng=rng))
        distnet.fit(model, data(), loss="cross-entropy", optimizer=optim.SGD(model, lr=0.1), batch_size=16,
                    seed=seed, verbose=False)
        return model.flat_params.copy()

    np.testing.assert_array_equal(once(0), once(0))
    assert not np.array_equal(once(0), once(1))


def test_fit_leaves_no_reducer_installed():
    model = model_with_dropout()
    distnet.fit(model, data(), loss="cross-entropy", optimizer=optim.SGD(model, lr=0.1), batch_size=16,
                verbose=False)
    reducers = [m.stat_reducer for m in model.modules() if hasattr(m, "stat_reducer")]
    assert len(reducers) == 2 and all(r is None for r in reducers)
    assert model.input_grad is True
