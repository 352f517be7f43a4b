"""The scaling model (distnet/scaling.py): MPICH's allreduce costs against hand-computed values,
its algorithm selection, fp16's halved bytes, overlap's bound, the calibration fits and the
command line (``python -m distnet.bench --predict``). No timing is asserted anywhere."""
import json
import math
import os
import subprocess
import sys

import pytest

from distnet import scaling
from distnet.scaling import Link

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B, G = 5e-6, 1e-9, 2e-10  # alpha, beta, gamma
LINK = Link(A, B, G)


def test_recursive_doubling_p8_is_lg_p_whole_vector_exchanges():
    n = 1000.0
    assert scaling.recursive_doubling_time(8, n, LINK) == pytest.approx(3 * (A + n * B + n * G), rel=1e-12)


def test_rabenseifner_p8():
    n = 4e6
    want = 2 * 3 * A + 2 * (7 / 8) * n * B + (7 / 8) * n * G
    assert scaling.rabenseifner_time(8, n, LINK) == pytest.approx(want, rel=1e-12)


def test_p2_rabenseifner_sends_the_vector_once_each_way_in_halves():
    n = 1e6
    assert scaling.rabenseifner_time(2, n, LINK) == pytest.approx(2 * A + n * B + n * G / 2, rel=1e-12)


@pytest.mark.parametrize("p", [3, 5, 6, 7, 12, 100])
def test_non_power_of_two_folds_to_the_lower_power_of_two(p):
    n = 2e5
    q = 1 << (p.bit_length() - 1)
    lg = math.log2(q)
    fold = (A + n * B + n * G) + (A + n * B)  # pre-step with its reduction, post-step copy back
    assert scaling.recursive_doubling_time(p, n, LINK) == pytest.approx(lg * (A + n * B + n * G) + fold, rel=1e-12)
    # the form in MPICH's allreduce_intra_reduce_scatter_allgather.c, with p' = pof2:
    # (2 floor(lg p) + 2) alpha + (2 (p'-1)/p' + 2) n beta + n (1 + (p'-1)/p') gamma
    frac = (q - 1) / q
    mpich = (2 * lg + 2) * A + (2 * frac + 2) * n * B + n * (1 + frac) * G
    assert scaling.rabenseifner_time(p, n, LINK) == pytest.approx(mpich, rel=1e-12)


def test_power_of_two_has_no_fold_and_one_rank_costs_nothing():
    assert scaling.rabenseifner_time(4, 100.0, LINK) == pytest.approx(4 * A + 1.5 * 100 * B + 0.75 * 100 * G)
    assert scaling.allreduce_time(1, 1e6, 250000, LINK) == (0.0, "none")
    assert [scaling.pof2_floor(p) for p in (1, 2, 3, 4, 5, 511, 512, 513)] == [1, 2, 2, 4, 4, 256, 512, 512]
    with pytest.raises(ValueError):
        scaling.pof2_floor(0)


def test_algorithm_switch_follows_mpich_5_selection():
    pick = scaling.mpich_allreduce_algorithm
    assert pick(8, 8, 2) == "recursive_doubling"            # <= 8 bytes
    assert pick(8, 16, 4) == "recursive_doubling"           # count 4 < pof2 8
    assert pick(8, 32, 8) == "rabenseifner"                 # 32 bytes, count 8 = pof2
    assert pick(2, 32, 4) == "rabenseifner"                 # the step's 4 float64 stats on 2 ranks
    assert pick(8, 32, 4) == "recursive_doubling"           # ... and on 8 ranks
    assert pick(3, 32, 4) == "rabenseifner"                 # p=3: pof2 2
    assert pick(8, 4e6, 1e6, builtin_op=False) == "recursive_doubling"  # a user-defined op
    assert pick(8, 2048, 512, nonblocking=True) == "recursive_doubling"  # Iallreduce: <= 2048 B
    assert pick(8, 2052, 513, nonblocking=True) == "rabenseifner"
    t, algo = scaling.allreduce_time(8, 4e6, 1e6, LINK)
    assert algo == "rabenseifner" and t == scaling.rabenseifner_time(8, 4e6, LINK)
    t, algo = scaling.allreduce_time(8, 8, 2, LINK)
    assert algo == "recursive_doubling" and t == scaling.recursive_doubling_time(8, 8, LINK)


def _comms():
    return scaling.ModelComms(grad_count=100_000, grad_itemsize=4, layer_sizes=[60_000, 0, 40_000])


COMPUTE = scaling.Compute(intercept=2e-3, per_sample=1e-4, backward_share=0.5)


def test_fp16_halves_the_gradient_bytes():
    s32 = scaling.predict(scaling.Setting(8, global_batch=64), _comms(), COMPUTE, LINK)
    s16 = scaling.predict(scaling.Setting(8, global_batch=64, compress="fp16"), _comms(), COMPUTE, LINK)
    assert s32["grad_bytes"] == 400_000 and s16["grad_bytes"] == 200_000
    assert s32["grad_allreduce_s"] == pytest.approx(scaling.rabenseifner_time(8, 400_000, LINK))
    assert s16["grad_allreduce_s"] == pytest.approx(scaling.fp16_reduce_time(8, 100_000, LINK)[0])
    # the bandwidth term of the two collectives is half the float32 Rabenseifner's
    no_latency = Link(0.0, B, 0.0)
    t16 = scaling.fp16_reduce_time(8, 100_000, no_latency)[0]
    t32 = scaling.rabenseifner_time(8, 400_000, no_latency)
    assert t16 == pytest.approx(t32 / 2, rel=1e-3)  # (+ the 4-byte scale per chunk)


def test_fp16_collectives_by_hand_and_their_algorithm_switches():
    # p=4, 1000 values: chunks of 250 float16 + a 4-byte scale = 504 bytes per destination
    t, algo = scaling.fp16_reduce_time(4, 1000, LINK)
    alltoall = 3 * (A + 504 * B)                     # permuted sendrecv (p < 8, <= 32768 B)
    allgather = 2 * A + (3 / 4) * 4 * 504 * B        # recursive doubling (p = 4, total < 512 KiB)
    reduce = 3 * 250 * 4 * G
    assert t == pytest.approx(alltoall + allgather + reduce) and "permuted_sendrecv" in algo
    assert scaling.alltoall_time(16, 2048, LINK)[1] == "bruck"
    assert scaling.alltoall_time(16, 2049, LINK)[1] == "permuted_sendrecv"
    assert scaling.alltoall_time(4, 40000, LINK) == (pytest.approx(3 * (A + 40000 * B)), "pairwise")
    assert scaling.allgather_time(8, 524288, LINK)[1] == "ring"
    assert scaling.allgather_time(6, 81919, LINK)[1] == "bruck"
    assert scaling.allgather_time(6, 81920, LINK) == (pytest.approx(5 * A + 5 / 6 * 81920 * B), "ring")
    assert scaling.fp16_reduce_time(1, 1000, LINK) == (0.0, "none")


def test_fp16_codec_time_is_compute_on_the_critical_path():
    codec = scaling.Compute(2e-3, 1e-4, 0.5, fp16_codec_s=3e-3)
    r = scaling.predict(scaling.Setting(8, global_batch=64, compress="fp16"), _comms(), codec, LINK)
    assert r["fp16_codec_s"] == 3e-3 and r["compute_s"] == pytest.approx(2e-3 + 8 * 1e-4 + 3e-3)
    one = scaling.predict(scaling.Setting(1, global_batch=64, compress="fp16"), _comms(), codec, LINK)
    assert one["fp16_codec_s"] == 0.0 and one["comm_s"] == 0.0  # one rank: nothing travels


def test_step_is_compute_at_the_per_rank_batch_plus_every_collective():
    r = scaling.predict(scaling.Setting(8, global_batch=100), _comms(), COMPUTE, LINK)
    assert r["per_rank_batch"] == 13  # ceil(100 / 8): the largest slice sets the pace
    assert r["compute_s"] == pytest.approx(2e-3 + 13 * 1e-4)
    stats = scaling.recursive_doubling_time(8, 32, LINK)  # 4 float64, count 4 < 8
    assert r["stats_s"] == pytest.approx(stats)
    assert r["comm_s"] == pytest.approx(scaling.rabenseifner_time(8, 400_000, LINK) + stats)
    assert r["step_s"] == pytest.approx(r["compute_s"] + r["comm_s"])
    assert r["images_per_s"] == pytest.approx(100 / r["step_s"])
    assert r["efficiency"] == pytest.approx((2e-3 + 100 * 1e-4) / (8 * r["step_s"]))


def test_weak_scaling_keeps_the_per_rank_batch():
    r = scaling.predict(scaling.Setting(32, per_rank_batch=16), _comms(), COMPUTE, LINK)
    assert r["global_batch"] == 512 and r["per_rank_batch"] == 16
    assert r["efficiency"] == pytest.approx((2e-3 + 16 * 1e-4) / r["step_s"])


def test_batchnorm_layers_add_two_small_allreduces_each():
    comms = _comms()
    comms.batchnorm_channels = [16]
    r = scaling.predict(scaling.Setting(4, global_batch=64), comms, COMPUTE, LINK)
    fwd = scaling.allreduce_time(4, 33 * 8, 33, LINK)[0]
    bwd = scaling.allreduce_time(4, 32 * 8, 32, LINK)[0]
    assert r["batchnorm_s"] == pytest.approx(fwd + bwd)


def test_cpu_sharing_inflates_compute():
    r = scaling.predict(scaling.Setting(3, global_batch=60, shared_cores=2), _comms(), COMPUTE, LINK)
    assert r["cpu_share"] == 1.5 and r["compute_s"] == pytest.approx(1.5 * (2e-3 + 20 * 1e-4))
    r = scaling.predict(scaling.Setting(2, global_batch=60, shared_cores=2), _comms(), COMPUTE, LINK)
    assert r["cpu_share"] == 1.0


def test_overlap_hides_at_most_the_buckets_before_the_last_and_at_most_backward():
    comms = _comms()
    # buckets of >= 200 kB: [40000 (last layer first), 60000] elements
    assert scaling.buckets(comms.layer_sizes, 4, 100_000) == [40_000, 60_000]
    assert scaling.buckets(comms.layer_sizes, 4, 1 << 20) == [100_000]
    slow = Link(A, 1e-7, G)  # communication far longer than backward
    r = scaling.predict(scaling.Setting(2, global_batch=64, overlap=True, bucket_bytes=100_000), comms, COMPUTE, slow)
    backward = r["compute_s"] * 0.5
    first = scaling.allreduce_time(2, 160_000, 40_000, slow, nonblocking=True)[0]
    assert first > backward and r["hidden_s"] == pytest.approx(backward)
    one = scaling.predict(scaling.Setting(2, global_batch=64, overlap=True), comms, COMPUTE, slow)
    assert one["hidden_s"] == 0.0  # one bucket: ready only when backward is over


def test_ppn_composition_adds_shared_memory_steps_only_inside_nodes():
    shm = Link(1e-7, 1e-11, G)
    flat, algo = scaling.hierarchical_allreduce_time(8, 1, 1e6, 250_000, LINK, shm)
    assert flat == scaling.rabenseifner_time(8, 1e6, LINK) and algo == "rabenseifner"
    t, _ = scaling.hierarchical_allreduce_time(8, 4, 1e6, 250_000, LINK, shm)
    node = 2 * (shm.alpha + 1e6 * shm.beta + 1e6 * G) + 2 * (shm.alpha + 1e6 * shm.beta)
    assert t == pytest.approx(flat + node)


@pytest.mark.parametrize("text, want", [("10Gbit", 1.25e9), ("100Mbit", 12.5e6), ("1gbit", 1.25e8),
                                        ("25Gbit/s", 25e9 / 8), ("1.25GB/s", 1.25e9), ("800kbit", 1e5)])
def test_bandwidth_parsing(text, want):
    assert scaling.parse_bandwidth(text) == pytest.approx(want)


@pytest.mark.parametrize("text, want", [("5us", 5e-6), ("0.5ms", 5e-4), ("800ns", 8e-7), ("1e-6s", 1e-6),
                                        ("0us", 0.0)])
def test_latency_parsing(text, want):
    assert scaling.parse_latency(text) == pytest.approx(want)


@pytest.mark.parametrize("text", ["10", "fast", "10 furlongs", "-1Gbit", "0Gbit", "10Gbps!"])
def test_bad_bandwidth(text):
    with pytest.raises(ValueError, match="--bandwidth"):
        scaling.parse_bandwidth(text)


@pytest.mark.parametrize("text", ["5", "5 parsecs", "-5us", "inf ms", "us"])
def test_bad_latency(text):
    with pytest.raises(ValueError, match="--latency"):
        scaling.parse_latency(text)


def test_node_list_parsing():
    assert scaling.parse_nodes("8,32, 128,512") == [8, 32, 128, 512]
    for bad in ("", "0", "8,-1", "eight"):
        with pytest.raises(ValueError, match="--nodes"):
            scaling.parse_nodes(bad)


def test_link_fit_recovers_alpha_and_beta_from_synthetic_timings():
    alpha, beta = 7e-6, 8e-8  # 100 Mbit/s
    sizes = [8 * 4 ** k for k in range(10)]
    wobble = [1.02, 0.99, 1.01, 0.98, 1.0, 1.01, 0.99, 1.0, 1.01, 0.99]
    pingpong = [(n, (alpha + n * beta) * w) for n, w in zip(sizes, wobble)]
    reduce_local = [(n, 1e-6 + n * 1.3e-10) for n in sizes]
    link = scaling.fit_link(pingpong, reduce_local)
    assert link.alpha == pytest.approx(alpha, rel=0.05)
    assert link.beta == pytest.approx(beta, rel=0.03)
    assert link.gamma == pytest.approx(1.3e-10, rel=1e-6)
    exact = scaling.fit_link([(n, alpha + n * beta) for n in sizes])
    assert exact.alpha == pytest.approx(alpha, rel=1e-6) and exact.beta == pytest.approx(beta, rel=1e-9)


def test_link_fit_takes_beta_from_large_messages_under_a_token_bucket():
    # tc tbf: the first 64 KiB leave at line rate (10 Gbit/s), the rest at 100 Mbit/s
    def one_way(n):
        return 10e-6 + min(n, 65536) * 8e-10 + max(0, n - 65536) * 8e-8
    link = scaling.fit_link([(n, one_way(n)) for n in [8 * 4 ** k for k in range(10)]])
    assert link.beta == pytest.approx(8e-8, rel=0.05)
    assert link.alpha == pytest.approx(10e-6, rel=0.05)


def test_compute_line_fit():
    a, b = scaling.fit_line([8, 16, 32, 64], [1e-3 + 8 * 2e-4, 1e-3 + 16 * 2e-4, 1e-3 + 32 * 2e-4, 1e-3 + 64 * 2e-4])
    assert a == pytest.approx(1e-3) and b == pytest.approx(2e-4)
    with pytest.raises(ValueError):
        scaling.fit_line([8, 8], [1.0, 2.0])


# --- the command line ---------------------------------------------------------------------
@pytest.fixture
def calibration(tmp_path):
    doc = {"links": {"bridge": {"alpha": 2e-5, "beta": 1e-9, "gamma": 1e-10},
                     "shm": {"alpha": 1e-6, "beta": 1e-10, "gamma": 1e-10}},
           "compute": {"cnn2": {"samples": [[16, 0.01], [32, 0.018], [64, 0.034]], "backward_share": 0.6}}}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps(doc))
    return str(path)


def bench(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "distnet.bench", "--predict", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_cli_predicts_every_node_count(calibration):
    r = bench("--nodes", "8,32,128,512", "--bandwidth", "10Gbit", "--latency", "5us", "--calibration",
              calibration, "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["nodes"] for row in rows] == [8, 32, 128, 512]
    assert rows[0]["per_rank_batch"] == 16 and rows[0]["compute_s"] == pytest.approx(0.01, rel=1e-6)
    comms = scaling.model_comms("cnn2")
    net = Link(5e-6, 8 / 10e9, 1e-10)
    want = scaling.rabenseifner_time(8, comms.grad_count * 4, net) + scaling.recursive_doubling_time(8, 32, net)
    assert rows[0]["comm_s"] == pytest.approx(want, rel=1e-9)
    text = bench("--nodes", "8,32", "--latency", "0.5ms", "--bandwidth", "100Mbit", "--compress", "fp16",
                 "--calibration", calibration)
    assert text.returncode == 0, text.stderr
    assert "float16" in text.stdout and "efficiency" in text.stdout


@pytest.mark.parametrize("args, flag", [
    (["--bandwidth", "10furlongs"], "--bandwidth"),
    (["--latency", "fast"], "--latency"),
    (["--nodes", "8,zero"], "--nodes"),
    (["--ppn", "0"], "--ppn"),
    (["--link", "infiniband"], "--link"),
    (["--model", "lenet5"], "--model"),
    (["--compress", "zip"], "--compress"),
])
def test_cli_bad_values_are_one_line_errors(calibration, args, flag):
    r = bench(*args, "--calibration", calibration)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distnet: error:") and flag in lines[0], r.stderr
    assert r.stdout == ""


def test_cli_missing_or_bad_calibration_file(tmp_path):
    r = bench("--calibration", str(tmp_path / "none.json"))
    assert r.returncode == 2 and r.stderr.startswith("distnet: error: --calibration:")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = bench("--calibration", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
