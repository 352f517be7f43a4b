"""The loop's per-step statistics and stop flag, reduced inside the step (Trainer.train_step
with ``reduce_stats``: a non-blocking allreduce that rides the gradient allreduce), under
real MPI: the same figures as reducing each rank's local statistics afterwards, the same
logged loss and accuracy as one process, and a stop asked of one rank stops every rank in
the same step."""
import numpy as np
import pytest

from distnet.config import TrainConfig
from distnet.data.synthetic import synthetic
from distnet.distributed import SingleProcessCommunicator
from distnet.train import build_trainer

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.usefixtures("watchdog")]

TRAIN_SIZE, BATCH = 91, 30  # batches 30, 30, 30, 1: uneven and (on 2+ ranks) empty slices


def make_trainer(comm, mode="plain", log_every=50, checkpoint_dir=None):
    extra = {"overlap": {"overlap": True, "bucket_mb": 16 / 1024}, "plain": {},
             "deterministic": {"deterministic": True, "micro_batches": 4}}[mode]
    cfg = TrainConfig(dataset="synthetic", model="lenet5", batch_size=BATCH, optimizer="sgd", lr=0.05,
                      schedule="constant", warmup_steps=0, no_progress=True, eval_every=0,
                      log_every=log_every, checkpoint_dir=checkpoint_dir, **extra)
    return build_trainer(cfg, comm, synthetic("train", n=TRAIN_SIZE), synthetic("test", n=16))


@pytest.mark.parametrize("mode", ["plain", "overlap", "deterministic"])
def test_stats_reduced_in_the_step_are_the_sum_of_every_rank_s_own(comm, mode):
    """Two identical trainers step side by side: one returns this rank's stats, which the
    test sums over the ranks itself; the other reduces them inside its step.  Five steps
    reach the last batch of one sample (empty slices)."""
    own, riding = make_trainer(comm, mode), make_trainer(comm, mode)
    for step in range(5):
        local = own.train_step()
        expected = comm.allreduce(local.copy())
        flags = riding.train_step(reduce_stats=True)
        assert flags.shape == (4,) and flags[3] == 0, flags
        np.testing.assert_allclose(flags[:3], expected, rtol=1e-12, err_msg=f"{mode}, step {step}")
        assert flags[2] == (BATCH if step % 4 < 3 else 1)
        np.testing.assert_allclose(riding.model.flat_params, own.model.flat_params, rtol=0, atol=0)


def test_logged_loss_and_accuracy_equal_one_process_s(comm):
    """fit's log lines (loss and accuracy of each window of 2 steps) on every world size
    are one process's, to float rounding of the trajectory."""
    def train_records(c):
        trainer = make_trainer(c, log_every=2)
        trainer.total_steps = 6
        trainer.run()
        return [r for r in trainer.coordinator.records if r["event"] == "train"]

    alone = train_records(SingleProcessCommunicator())
    together = train_records(comm)
    if comm.rank != 0:
        return  # rank 0 logs
    assert [r["step"] for r in together] == [r["step"] for r in alone] == [2, 4, 6]
    for a, t in zip(alone, together):
        assert t["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, t)
        assert t["accuracy"] == pytest.approx(a["accuracy"], abs=1e-9), (a, t)


def test_a_stop_asked_of_one_rank_stops_every_rank_after_the_same_step(comm, tmp_path):
    """The last rank alone is asked to stop (as by its own SIGTERM) while it loads step 3's
    batch: every rank finishes that step and stops after it, at step 4, where rank 0 writes
    the checkpoint."""
    folder = comm.broadcast_object(str(tmp_path) if comm.rank == 0 else None)
    trainer = make_trainer(comm, checkpoint_dir=folder)
    trainer.total_steps = 20
    batch = trainer.loader.batch

    def batch_and_maybe_ask(epoch, index):
        if comm.rank == comm.size - 1 and trainer.step == 3:
            trainer.stop.requested = True
        return batch(epoch, index)

    trainer.loader.batch = batch_and_maybe_ask
    result = trainer.run()
    steps = comm.allgather(np.array([result["step"], result["completed"]]))
    assert steps[:, 0].tolist() == [4] * comm.size and not steps[:, 1].any(), steps
    assert [r["step"] for r in trainer.coordinator.records if r["event"] == "train"][-1] == 4
    if comm.rank == 0:
        from distnet import checkpoint
        assert checkpoint.load(f"{folder}/{checkpoint.LATEST}").step == 4


def test_bench_timeline_gathers_every_rank_s_breakdown(comm):
    """``mpirun -n N python -m distnet.bench --timeline``'s figures: one summary per rank on
    rank 0, each over the steps after the warm-up, and a lockstep split that adds up."""
    from distnet.bench_sync import parse_args, run_timeline

    args = parse_args(["--timeline", "--steps", "12", "--warmup", "2", "--per-rank-batch", "8", "--barrier"])
    summaries, loss = run_timeline(args, comm)
    if comm.rank != 0:
        assert summaries is None and loss is None
        return
    assert len(summaries) == comm.size and all(s["steps"] == 10 for s in summaries)
    assert all(s["ms"]["forward_backward"] > 0 and s["ms"]["grad_imbalance"] > 0 for s in summaries)
    assert all(s["ms"]["stats_allreduce"] < s["step_ms"] for s in summaries)
    assert loss["busy"] + loss["imbalance"] + loss["communication"] == pytest.approx(1.0)
    assert 0 < loss["busy"] <= 1 and loss["imbalance"] >= 0
