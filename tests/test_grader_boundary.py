"""The grader's boundary: plain data on the wire, a worker that only answers, walls that hide the secrets.

- wire: every plain value survives the trip exactly (hypothesis); what is not plain data, or breaks a
  limit, is refused before it is read or built.
- worker: the operations, in-place arguments sent back, the grader's no_grad held, errors answered
  with their type, references flagged when the submission's own code calls them (not the library's).
- walls: a worker started the way the grader starts one, asked through `student("os")` what it can
  see: as root, uid 65534, no network, its own pid namespace, and no instructor's tree, hidden tests,
  results folder or installed minilm; as an ordinary user (setpriv to nobody), the same view without
  the separate uid, or, with no namespaces at all, at least the limits; the grade says which, in one line.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.course import boundary, sandbox, wire, worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from red_team import NOBODY, user_python  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
solution_only = pytest.mark.skipif((ROOT / "HANDOUT.md").exists(), reason="checks the solution tree; this is a handout")


# ------------------------------------------------------------------------------------------- wire

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=8),
                    st.binary(max_size=8))
hashables = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4), st.binary(max_size=4)),
                         lambda inner: st.tuples(inner, inner), max_leaves=4)
DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64, torch.complex64]


@st.composite
def tensors(draw):
    shape = draw(st.lists(st.integers(0, 3), max_size=3))
    dtype = draw(st.sampled_from(DTYPES))
    t = (torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
         * 10).to(dtype)
    if t.is_floating_point() and draw(st.booleans()):
        t = t.requires_grad_() if draw(st.booleans()) else torch.nn.Parameter(t)
    return t


@st.composite
def arrays(draw):
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    dtype = draw(st.sampled_from(["<f8", "<f4", "<i8", "|b1", "<u2", "<c16"]))
    return (np.random.default_rng(draw(st.integers(0, 99))).normal(size=shape) * 10).astype(dtype)


values = st.recursive(
    st.one_of(scalars, tensors(), arrays(), st.sampled_from([np.float32(1.5), np.int64(-3), np.bool_(True)])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                            st.dictionaries(hashables, inner, max_size=3), st.frozensets(hashables, max_size=3)),
    max_leaves=8)


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        bits = (lambda t: t.detach().contiguous().reshape(-1).view(torch.uint8))  # NaN-proof: compare the bytes
        return (type(b) is type(a) and a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad
                and torch.equal(bits(a), bits(b)))
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, np.generic):
        return type(b) is type(a) and a.tobytes() == b.tobytes()
    if isinstance(a, float):
        return type(b) is float and (a == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, (list, tuple)):
        return type(b) is type(a) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    return type(b) is type(a) and a == b


@settings(max_examples=150, deadline=None)
@given(values)
def test_plain_values_cross_exactly(value):
    header, blobs = wire.encode(value)
    buffer = bytearray(wire.pack(header, blobs))

    def read_exactly(n):
        out = bytes(buffer[:n])
        del buffer[:n]
        return out
    got = wire.decode(*wire.read_frame(read_exactly))
    assert same(value, got), (value, got)


def test_what_is_not_plain_data_is_refused():
    for bad in (object(), np.array([object()]), np.array(["text"]), lambda: 1, torch.nn.Linear(2, 2)):
        with pytest.raises(wire.WireError, match="cannot be sent|not plain data"):
            wire.encode(bad)


@pytest.mark.parametrize("header, why", [
    ({"$": "tensor", "i": 0, "dtype": "float32", "shape": [3], "device": "cpu"}, "needs 12 bytes"),
    ({"$": "tensor", "i": 0, "dtype": "object", "shape": [1]}, "not accepted"),
    ({"$": "ndarray", "i": 0, "dtype": "|O", "shape": [1]}, "not accepted"),
    ({"$": "ndarray", "i": 0, "dtype": "<f8", "shape": [-1]}, "bad shape"),
    ({"$": "ndarray", "i": 5, "dtype": "<f8", "shape": [1]}, "out of range"),
    ({"$": "pickle", "v": "gASVAAAAAAAAAAA="}, "unknown kind"),
    ({"$": "dict", "v": [[[1, 2], 3]]}, "unhashable"),
    ({"$": "ref", "id": 1, "type": "x"}, "reference"),
    ({"$": "float", "v": "1e999999"}, "bad float"),
])
def test_a_forged_answer_is_refused(header, why):
    with pytest.raises(wire.WireError, match=why):
        wire.decode(header, [b"\x00" * 8])


def test_limits_are_checked_before_anything_is_read():
    asked = []

    def read_exactly(n):
        asked.append(n)
        if len(asked) == 1:
            return (1 << 30).to_bytes(4, "little")  # a 1 GB header announced
        raise AssertionError("read past a refused length")
    with pytest.raises(wire.WireError, match="header of"):
        wire.read_frame(read_exactly)
    assert asked == [4]
    deep = []
    for _ in range(wire.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(wire.WireError, match="nested deeper"):
        wire.decode(json.loads(json.dumps(deep)), [])
    frame = wire.pack({"x": 1}, [b"a" * 100, b"b" * 100])
    buffer = bytearray(frame)

    def reader(n):
        out = bytes(buffer[:n])
        del buffer[:n]
        return out
    with pytest.raises(wire.WireError, match="arrays in one answer"):
        wire.read_frame(reader, max_arrays=150)


def test_a_record_is_read_only_and_never_its_class():
    from minilm.nn.model import ModelOutput
    header, blobs = wire.encode(ModelOutput(loss=torch.tensor(1.0), logits=torch.zeros(2), labels=None))
    got = wire.decode(header, blobs)
    assert isinstance(got, wire.Record) and got.loss.item() == 1.0 and got.logits.shape == (2,)
    with pytest.raises(AttributeError, match="read-only"):
        got.loss = 3


# ------------------------------------------------------------------------------------------- worker, in-process


def ask(w: worker.Worker, op: str, obj=None, args=(), **fields):
    header, blobs = wire.encode(args, ref=lambda r: wire.Ref(r._id, ""), classes=True)
    request = {"op": op, "args": header, **({"obj": obj} if obj is not None else {}), **fields}
    value, wrote = w.handle(request, blobs)
    return value, wrote


def test_the_worker_answers_calls_and_sends_in_place_changes_back():
    w = worker.Worker({})
    module, _ = ask(w, "import", module="minilm.train.optim")
    fn = w.ref(module.adamw_update).id
    p, g, m, v = torch.ones(3), torch.tensor([1.0, -2.0, 3.0]), torch.zeros(3), torch.zeros(3)
    value, wrote = ask(w, "call", fn, ([p, g, m, v, 1], {"lr": 0.1, "weight_decay": 0.0}, None), grad=False)
    assert value is None and sorted(k for k, _ in wrote) == [0, 2, 3]  # p, m and v changed; g did not
    torch.testing.assert_close(dict(wrote)[0], torch.ones(3) - 0.1 * torch.sign(g))  # step 1 moves by lr
    lr, _ = ask(w, "call", w.ref(module.learning_rate).id, ([[0], [5], [99]], {"peak": 1.0, "warmup_steps": 10,
                                                                               "total_steps": 100}, None), mode="map")
    assert lr[0] == pytest.approx(0.1) and lr[1] == pytest.approx(0.6) and len(lr) == 3


def test_vjp_and_trace_run_where_the_function_lives():
    w = worker.Worker({})
    torch_module, _ = ask(w, "import", module="torch.nn.functional")
    x = torch.randn(4, 3, requires_grad=True)
    (out, grads), _ = ask(w, "call", w.ref(torch_module.softmax).id, ([x], {"dim": -1}, torch.ones(4, 3)), mode="vjp")
    torch.testing.assert_close(out, torch.softmax(x, -1))
    torch.testing.assert_close(grads[0], torch.zeros(4, 3), atol=1e-6, rtol=0)  # the rows sum to one
    (_, shapes), _ = ask(w, "call", w.ref(torch.matmul).id, ([torch.ones(2, 5), torch.ones(5, 7)], {}, None),
                         mode="trace")
    assert (2, 7) in shapes


def test_an_unfinished_function_is_recognised_and_other_errors_keep_their_type():
    try:
        raise NotImplementedError("assignment bpe: implement learn_merges (minilm/data/bpe.py); see HANDOUT.md")
    except NotImplementedError as e:
        assert worker._error(e)["unfinished"] == "bpe"
    try:
        raise KeyError("x")
    except KeyError as e:
        error = worker._error(e)
    assert error["type"] == "KeyError" and error["builtin"] and error["unfinished"] is None


def test_references_are_flagged_only_when_the_submission_itself_calls_them(tmp_path):
    student_file = tmp_path / "theirs.py"
    student_file.write_text(textwrap.dedent("""
        import minilm.data.tokenizer as tok
        from minilm.data.tokenizer import bpe_merges as learn_merges  # the reference, under the student's name

        def wrapped(counts, n):
            return tok.bpe_merges(counts, n)

        def honest(counts, n):
            return tok.Tokenizer  # no call to the reference
    """))
    w = worker.Worker({"student_files": [str(student_file)], "references": ["minilm.data.tokenizer.bpe_merges"]})
    sys.path.insert(0, str(tmp_path))
    try:
        theirs, _ = ask(w, "import", module="theirs")
        for name, flagged in (("learn_merges", True), ("wrapped", True), ("honest", False)):
            w.flags = []
            ask(w, "call", w.ref(getattr(theirs, name)).id, ([{b"ab": 2}, 257], {}, None))
            assert bool(w.flags) == flagged, name
        import minilm.data.tokenizer as tok
        w.flags = []
        tok.Tokenizer.train(["ab ab"], 270)  # the library calling its own engine: not the submission
        assert w.flags == []
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("theirs", None)
        import minilm.data.tokenizer as tok
        tok.bpe_merges = tok.bpe_merges.__wrapped__


def test_by_hand_student_is_the_module_and_the_helpers_run_in_process():
    assert not boundary.grading()
    import minilm.data.bpe
    assert boundary.student("minilm.data.bpe") is minilm.data.bpe
    x = torch.randn(3, requires_grad=True)
    out, (dx,) = boundary.value_and_grad(torch.sin, x, grad_output=torch.ones(3))
    torch.testing.assert_close(dx, torch.cos(x).detach())
    _, shapes = boundary.shapes_during(torch.outer, torch.ones(2), torch.ones(3))
    assert shapes == [(2, 3)]
    assert boundary.each(pow, [(2, 3), (3, 2)]) == [8, 9]


# ------------------------------------------------------------------------------------------- walls

PROBE = """
import json, os, sys
from pathlib import Path
from minilm.course import boundary, grading, sandbox
from minilm.course.markers import REPO, get

repo, secret = Path(sys.argv[1]), Path(sys.argv[2])
mode = sys.argv[3]
isolation = sandbox.probe() if mode == "probe" else sandbox.Isolation(mode, "test")
scratch = Path(sys.argv[4])
tree = scratch / "tree"
tree.mkdir()
taken = grading.build_tree(get("bpe"), repo, tree, repo)
config = grading.worker_config(tree, scratch, repo, isolation, sandbox.Limits(memory_mb=2048), taken.files, (), 60)
seen = {"mode": isolation.mode, "line": isolation.line}
with boundary.connected(config):
    os_ = boundary.student("os")
    seen["uid"] = os_.getuid()
    seen["pid"] = os_.getpid()
    seen["repo"] = os_.path.exists(str(repo / "minilm" / "data" / "bpe.py"))
    seen["secret"] = os_.path.exists(str(secret))
    seen["scratch"] = os_.path.exists(str(scratch / "worker.json"))
    seen["tree_bpe"] = os_.path.exists(("/submission" if isolation.mode != "none" else str(tree)) + "/minilm/data/bpe.py")
    seen["interfaces"] = [n for _, n in boundary.student("socket").if_nameindex()]
    resource = boundary.student("resource")
    seen["nproc"] = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    seen["data"] = resource.getrlimit(resource.RLIMIT_DATA)[0]
    try:
        boundary.student("importlib.metadata").distribution("minilm")
        seen["installed"] = True
    except boundary.SubmissionError:
        seen["installed"] = False
    try:
        boundary.student("builtins").open(str(secret), "a")
        seen["write_secret"] = True
    except boundary.SubmissionError:
        seen["write_secret"] = False
    seen["grader_visible"] = os_.path.exists(f"/proc/{os.getpid()}")
print(json.dumps(seen))
"""


def probe(mode: str, *, as_nobody: bool = False) -> dict:
    """What a worker started by the grader sees, asked through the boundary (the grader as nobody, or as root)."""
    tmp = Path(tempfile.mkdtemp(prefix="minilm-probe-"))  # not under pytest's tmp_path: nobody cannot reach that
    try:
        return _probe(mode, as_nobody, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _probe(mode, as_nobody, tmp):
    secret = tmp / "hidden" / "test_secret.py"
    secret.parent.mkdir(parents=True)
    secret.write_text("SECRET = 1\n")
    scratch = tmp / "scratch"
    scratch.mkdir()
    for path in (tmp, secret.parent, secret, scratch):
        os.chmod(path, 0o777 if path.is_dir() else 0o666)  # an ordinary user's own files, when run as nobody
    cmd = [user_python() if as_nobody else sys.executable, "-c", PROBE, str(ROOT), str(secret), mode, str(scratch)]
    if as_nobody:
        cmd = [*NOBODY, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


walls = pytest.mark.skipif(os.geteuid() != 0 or sandbox.probe().mode != "root" or user_python() is None,
                           reason="needs root with util-linux unshare (the walls are tested where they can be built), "
                                  "and a Python an ordinary user can run")


@solution_only
@walls
def test_as_root_the_worker_is_walled_in():
    seen = probe("probe")
    assert seen["mode"] == "root" and "uid 65534" in seen["line"]
    assert seen["uid"] == 65534 and seen["pid"] == 2  # nobody, second process of its own pid namespace
    assert not seen["repo"] and not seen["secret"] and not seen["scratch"] and not seen["installed"]
    assert seen["tree_bpe"], "the grading tree must be there"
    assert seen["interfaces"] == ["lo"], "no network device but loopback"
    assert not seen["write_secret"] and not seen["grader_visible"]
    assert seen["data"] == 2048 << 20 and 0 < seen["nproc"] < 100_000


@solution_only
@walls
def test_as_an_ordinary_user_the_view_is_the_same_without_the_uid():
    seen = probe("probe", as_nobody=True)
    assert seen["mode"] == "userns" and seen["line"].startswith("isolation: not root (nobody): no separate uid")
    assert not seen["repo"] and not seen["secret"] and not seen["scratch"] and not seen["installed"]
    assert seen["interfaces"] == ["lo"] and not seen["grader_visible"]


@solution_only
@walls
def test_without_namespaces_the_limits_hold_and_the_line_says_what_is_missing():
    seen = probe("none", as_nobody=True)
    assert seen["mode"] == "none" and "no user namespaces" in seen["line"] and "no private filesystem" in seen["line"]
    assert seen["uid"] == 65534 and seen["data"] == 2048 << 20
    assert seen["secret"], "without namespaces the worker sees this user's files (the line says so)"
