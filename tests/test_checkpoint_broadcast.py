"""The resume checkpoint travels from rank 0 as JSON and raw arrays, never as a pickle
(issue 12, item 4).  Here two fake ranks in one process: rank 0's communicator records the
buffers it broadcasts, rank 1's replays them, and both refuse the object (pickling)
broadcast.  tests/mpi/test_checkpoint_broadcast_mpi.py does the same over real MPI with
mpi4py's unpickler disabled."""
import json

import numpy as np
import pytest

from distnet import checkpoint as ckpt_io
from distnet.distributed.checkpoint_broadcast import (
    MAX_HEADER_BYTES, broadcast_checkpoint, broadcast_resume_point)
from distnet.errors import UserError


class NoPickle:
    size = 2
    root = 0  # the rank every broadcast must name as its root

    def broadcast_object(self, obj, root=0):
        raise AssertionError("the object broadcast pickles: it must not be used for checkpoints")

    gather_object = broadcast_object


class Root(NoPickle):
    rank = 0

    def __init__(self):
        self.sent = []

    def broadcast(self, buf, root=0):
        assert root == self.root, f"broadcast from rank {root}, expected {self.root}"
        assert isinstance(buf, np.ndarray) and buf.dtype.kind in "biufc" and not buf.dtype.hasobject
        self.sent.append(buf.copy())
        return buf


class Peer(NoPickle):
    rank = 1

    def __init__(self, sent):
        self.sent = list(sent)

    def broadcast(self, buf, root=0):
        assert root == self.root, f"broadcast from rank {root}, expected {self.root}"
        assert isinstance(buf, np.ndarray) and buf.dtype.kind in "biufc"
        data = self.sent.pop(0)
        assert data.dtype == buf.dtype and data.shape == buf.shape, (data.dtype, data.shape, buf.dtype, buf.shape)
        buf[...] = data
        return buf


def over_the_wire(function, payload, tamper=None):
    """(root's result, peer's result) of ``function(comm, payload)`` on two fake ranks."""
    root = Root()
    mine = function(root, payload)
    sent = tamper(root.sent) if tamper else root.sent
    peer = Peer(sent)
    theirs = function(peer, None)
    assert peer.sent == [], "the peer did not receive everything the root sent"
    return mine, theirs


def sample_checkpoint():
    rng = np.random.default_rng(0)
    return ckpt_io.Checkpoint(
        params=rng.standard_normal(1000).astype(np.float32),
        optimizer={"lr": np.array(0.001), "step": np.array(7), "m": rng.standard_normal(1000).astype(np.float32),
                   "v": np.zeros(1000, np.float32)},
        step=7, epoch=1, position=3, seed=42,
        config={"model": "lenet5", "batch_size": 32, "lr": 0.001, "resume": None, "overlap": False},
        buffers=rng.standard_normal(12).astype(np.float32),
        meta={"model": {"spec": "lenet5", "args": {}}, "classes": ["a", "b"], "std": None})


def assert_same(a, b):
    for field in ("step", "epoch", "position", "seed", "config", "meta"):
        assert getattr(a, field) == getattr(b, field), field
    for field in ("params", "buffers"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)
    assert a.optimizer.keys() == b.optimizer.keys()
    for key in a.optimizer:
        np.testing.assert_array_equal(a.optimizer[key], b.optimizer[key])
        assert np.asarray(a.optimizer[key]).dtype == b.optimizer[key].dtype


def test_a_saved_checkpoint_arrives_whole(tmp_path):
    ckpt_io.save(sample_checkpoint(), tmp_path / "c.npz")
    loaded = ckpt_io.load(tmp_path / "c.npz")  # what the trainer broadcasts
    mine, theirs = over_the_wire(broadcast_checkpoint, loaded)
    assert mine is loaded
    assert_same(loaded, theirs)


def test_another_root_and_an_empty_buffers_field(tmp_path):
    """Rank 1 as the root, and a model without BatchNorm (buffers of length 0)."""
    ckpt = sample_checkpoint()
    ckpt.buffers = np.zeros(0, np.float32)
    root, peer = Root(), None
    root.rank = root.root = 1
    assert broadcast_checkpoint(root, ckpt, root=1) is ckpt
    peer = Peer(root.sent)
    peer.rank, peer.root = 0, 1
    received = broadcast_checkpoint(peer, None, root=1)
    assert_same(ckpt, received)
    assert received.buffers.shape == (0,)


def test_every_resume_payload_arrives_as_sent(tmp_path):
    ckpt = sample_checkpoint()
    for payload in (None, ("fresh", "/ck/latest.npz"), ("error", "/ck/x.npz: checksum mismatch")):
        mine, theirs = over_the_wire(broadcast_resume_point, payload)
        assert mine == theirs == payload
    mine, (kind, (received, source)) = over_the_wire(broadcast_resume_point, ("ckpt", (ckpt, "/ck/latest.npz")))
    assert (kind, source) == ("ckpt", "/ck/latest.npz") and mine[1][0] is ckpt
    assert_same(ckpt, received)


def test_the_header_is_plain_json_text(tmp_path):
    root = Root()
    broadcast_checkpoint(root, sample_checkpoint())
    length, header = root.sent[0], root.sent[1]
    assert length.dtype == np.int64 and header.dtype == np.uint8 and int(length[0]) == header.size
    message = json.loads(header.tobytes().decode())
    names = [entry[0] for entry in message["checkpoint"]["arrays"]]
    assert names[:2] == ["params", "optimizer/lr"] and "buffers" in names
    assert message["checkpoint"]["values"]["config"]["model"] == "lenet5"
    assert len(root.sent) == 2 + len(names)


def test_a_checkpoint_that_cannot_be_sent_is_an_error_on_every_rank():
    bad = sample_checkpoint()
    bad.params = np.array(["not", "numbers"])
    for function, payload in ((broadcast_checkpoint, bad), (broadcast_resume_point, ("ckpt", (bad, "p")))):
        root, peer = Root(), None
        results = []
        for comm in (root, "peer"):
            comm = Peer(root.sent) if comm == "peer" else comm
            try:
                results.append(function(comm, payload if comm is root else None))
            except UserError as exc:
                results.append(("raised", str(exc)))
        assert results[0] == results[1], results
        assert results[0][0] == ("raised" if function is broadcast_checkpoint else "error")
        assert "params has dtype <U7, not a plain number type" in str(results[0])


def forged(message):
    """Replace the header on the wire with ``message`` (a dict or raw text)."""
    text = message if isinstance(message, str) else json.dumps(message)
    data = np.frombuffer(text.encode(), np.uint8).copy()

    def tamper(sent):
        return [np.array([data.size], np.int64), data] + [np.zeros(1000, np.float32)] * 9
    return tamper


def honest_header():
    root = Root()
    broadcast_checkpoint(root, sample_checkpoint())
    return json.loads(root.sent[1].tobytes().decode())


@pytest.mark.parametrize("change", [
    lambda h: h["checkpoint"]["arrays"][0].__setitem__(1, "|O"),               # object array
    lambda h: h["checkpoint"]["arrays"][0].__setitem__(1, "[('a', 'O')]"),     # structured
    lambda h: h["checkpoint"]["arrays"][0].__setitem__(1, "|V8"),              # void
    lambda h: h["checkpoint"]["arrays"][0].__setitem__(2, [-1]),               # negative shape
    lambda h: h["checkpoint"]["arrays"][0].__setitem__(2, [1] * 9),            # too many dimensions
    lambda h: h["checkpoint"]["arrays"][0].__setitem__(2, [True]),             # not an int
    lambda h: h["checkpoint"]["values"].__setitem__("__class__", "x"),         # unknown field
    lambda h: h["checkpoint"]["values"].__setitem__("step", "7; rm -rf /"),   # wrong type
    lambda h: h["checkpoint"]["values"].__setitem__("params", [1.0]),          # a field twice
    lambda h: h["checkpoint"]["array_dicts"]["optimizer"].append("missing"),   # no such array
    lambda h: h["checkpoint"]["arrays"].append(h["checkpoint"]["arrays"][0]),  # duplicate name
    lambda h: h["checkpoint"].pop("values"),
    lambda h: h.pop("checkpoint"),
])
def test_a_forged_header_is_refused_before_any_array_is_made(change):
    header = honest_header()
    change(header)
    peer = Peer(forged(header)(None))
    with pytest.raises(UserError, match="checkpoint broadcast: malformed header"):
        broadcast_checkpoint(peer, None)


@pytest.mark.parametrize("message", [
    {"kind": "bogus", "text": "x", "checkpoint": None},
    {"kind": "fresh", "text": 5, "checkpoint": None},
    {"kind": "ckpt", "text": "/ck/latest.npz", "checkpoint": None},   # no checkpoint with it
    {"kind": "fresh", "text": "x"},                                   # no checkpoint key
    ["fresh", "x"],
])
def test_a_forged_resume_message_is_refused(message):
    data = np.frombuffer(json.dumps(message).encode(), np.uint8).copy()
    peer = Peer([np.array([data.size], np.int64), data])
    with pytest.raises(UserError, match="checkpoint broadcast: malformed header"):
        broadcast_resume_point(peer, None)


@pytest.mark.parametrize("text", ["{not json", "\udcff"])
def test_a_garbled_header_is_refused(text):
    raw = text.encode("utf-8", "surrogateescape") if text == "\udcff" else text.encode()
    data = np.frombuffer(raw, np.uint8).copy()
    peer = Peer([np.array([data.size], np.int64), data])
    with pytest.raises(UserError, match="checkpoint broadcast: header is not"):
        broadcast_checkpoint(peer, None)


def test_an_oversized_header_length_is_refused():
    peer = Peer([np.array([MAX_HEADER_BYTES + 1], np.int64)])
    with pytest.raises(UserError, match="header of"):
        broadcast_checkpoint(peer, None)


def test_an_impossible_shape_is_an_error_not_a_crash():
    header = honest_header()
    header["checkpoint"]["arrays"][0][2] = [2 ** 62, 2 ** 62]
    with pytest.raises(UserError, match="cannot allocate 'params'"):
        broadcast_checkpoint(Peer(forged(header)(None)), None)


def test_a_world_of_one_sends_nothing():
    class One(NoPickle):
        size, rank = 1, 0

        def broadcast(self, buf, root=0):
            raise AssertionError("no collective in a world of one")

    ckpt = sample_checkpoint()
    assert broadcast_checkpoint(One(), ckpt) is ckpt
    assert broadcast_resume_point(One(), ("fresh", "x")) == ("fresh", "x")
