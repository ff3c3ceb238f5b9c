"""How a graded test reaches the student's code: `student("minilm.data.bpe")` stands for the student's module.

Run by hand (a student in their handout, the test suite in the solution tree), `student(name)`
is simply the imported module: the test runs in-process and shows the usual tracebacks.
Under `minilm assignment grade` (MINILM_WORKER set), it is a proxy: every attribute, call,
item and assignment goes to the worker (minilm/course/worker.py), the one process that
imports the submission, behind the walls of minilm/course/sandbox.py. Arguments go as plain
data (minilm/course/wire.py), answers come back as plain data, checked for type, shape and
size here, and compared with the reference here, in the grader's process, which never
imports the submission. An object that is not plain data (a module, an nn.Module, a function)
stays in the worker and comes back as another proxy.

    bpe = student("minilm.data.bpe")
    assert bpe.count_pairs({(b"a", b"b"): 2}) == {(b"a", b"b"): 2}

    peft = student("minilm.nn.peft")
    layer = peft.LoRALinear(student("torch.nn").Linear(8, 4), 2, 4.0)   # built in the worker
    y = layer(torch.randn(3, 8))                                        # a tensor, here

What a test needs beyond calls has a helper that works both ways: `value_and_grad` (a call
and the gradients of its tensor arguments), `shapes_during` (the shapes of the tensors a call
made), `each` (many calls in one round trip) and `wire_in` (the trusted library calling the
student's function, as the trainer calls `micro_batches`).

Design choices:
- Copies, not views: an answer is a copy, so changing it changes nothing in the worker. A
  call that changes its tensor, array or generator arguments in place is sent those changes
  back, and they are written into the grader's arguments (AdamW's step updates p, m, v).
- Every failure of the submission is an exception of this module (`SubmissionError`), with
  a reason code the grader scores: not_implemented, error, crashed, timeout, bad_answer,
  import_error. An exception the student's code raised is re-raised here as the same
  builtin type when it is one (so `pytest.raises(ValueError, match=...)` reads the same),
  never as AssertionError.
- The worker starts on first use, is started again after a crash or a timeout (objects of
  the old one are then gone), and a module that cannot be imported is remembered, so the
  next test fails at once instead of paying for another start.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import subprocess
import tempfile
import threading
import time
import weakref

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from minilm.course import sandbox, wire

CONFIG_ENV = "MINILM_WORKER"  # path of the worker's JSON config, set by the grader


def grading() -> bool:
    """Whether this process is the grader's (student code is then reached through the worker only)."""
    return _CONNECTION is not None or bool(os.environ.get(CONFIG_ENV))


def student(module: str):
    """The student's `module`: imported here when run by hand, a proxy on the worker's when graded."""
    if not grading():
        return importlib.import_module(module)
    return RemoteModule(module)


# ---------------------------------------------------------------------------------------- failures


class SubmissionError(Exception):
    """The submission failed a call: `reason` is scored, `detail` may be shown, `private` only to the instructor."""

    reason = "error"

    def __init__(self, detail: str, private: str = ""):
        super().__init__(detail)
        self.detail, self.private = detail, private


class NotImplementedYet(SubmissionError, NotImplementedError):
    reason = "not_implemented"


class WorkerCrashed(SubmissionError):
    reason = "crashed"


class WorkerTimeout(SubmissionError):
    reason = "timeout"


class BadAnswer(SubmissionError):
    reason = "bad_answer"


class ImportFailed(SubmissionError):
    reason = "import_error"


class GoneObject(SubmissionError):
    reason = "crashed"


_RAISED: dict[str, type] = {}
_REUSED = (ValueError, TypeError, KeyError, IndexError, LookupError, AttributeError, RuntimeError, ZeroDivisionError,
           ArithmeticError, OverflowError, FloatingPointError, RecursionError, MemoryError, NotImplementedError)


def _raised(type_name: str, builtin: bool) -> type:
    """An exception class for what the submission raised: a subclass of the builtin of that name when it is
    one of the usual ones (never AssertionError: a student's failed assert is an error, not a verdict)."""
    base = next((b for b in _REUSED if builtin and b.__name__ == type_name), None)
    key = type_name if base else "?"
    if key not in _RAISED:
        _RAISED[key] = type(f"Submission{base.__name__ if base else 'Error'}", (SubmissionError, *((base,) if base else ())),
                            {"reason": "error"})
    return _RAISED[key]


# ---------------------------------------------------------------------------------------- the worker


class Connection:
    """The grader's side of one worker: start, ask, kill. One per grading process, made on first use."""

    def __init__(self, config: dict):
        self.config = config
        self.proc = None
        self.starting = False
        self.root_dir = None
        self.generation = 0
        self.broken_imports: dict[str, SubmissionError] = {}
        self.pending_release: list[int] = []
        self.live: dict[int, int] = {}  # handle -> proxies alive here
        self.flags: list[str] = []  # references the submission ran, since the test began
        self.deadline: float | None = None  # the current test's end, set by the grader's plugin
        self.output = _Tail()
        self.isolation = sandbox.Isolation(config["isolation"], config.get("user", "?"))
        self.lock = threading.Lock()

    # -- life

    def start(self, wait: bool = True) -> None:
        """Start a worker; without `wait`, its start-up (imports) overlaps what the grader does meanwhile."""
        to_worker_r, self.to_worker = os.pipe()
        self.from_worker, from_worker_w = os.pipe()
        out_r, out_w = os.pipe()
        self.root_dir = tempfile.mkdtemp(prefix="root-", dir=self.config["scratch"])
        scratch = tempfile.mkdtemp(prefix="home-", dir=self.config["scratch"])
        os.chmod(scratch, 0o700)
        limits = sandbox.Limits(**self.config["limits"])
        worker_config = {"student_files": self.config["student_files"], "references": self.config["references"]}
        self.proc = sandbox.spawn(self.isolation, tree=self.config["tree"], root_dir=self.root_dir, scratch=scratch,
                                  repo=self.config["repo"], env=self.config["env"], limits=limits,
                                  worker_config=worker_config, fds=(to_worker_r, from_worker_w), output_fd=out_w)
        for fd in (to_worker_r, from_worker_w, out_w):
            os.close(fd)
        os.set_blocking(self.to_worker, False)
        self.output.follow(out_r)
        self.generation += 1
        self.starting = True
        if wait:
            self._ready()

    def _ready(self) -> None:
        self.starting = False
        try:
            header, _ = self._read(time.monotonic() + self.config["start_timeout"])
        except SubmissionError as e:
            self.kill()
            raise WorkerCrashed("the submission's worker did not start", f"{e.private or e.detail}\n"
                                f"{self.output.text()}") from None
        if not header.get("ready"):
            self.kill()
            raise BadAnswer("the submission's worker did not start")

    def kill(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()
        for fd in (self.to_worker, self.from_worker):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc, self.starting = None, False
        self.pending_release, self.live = [], {}
        if self.isolation.mode == "none":
            sandbox.kill_orphans()
        if self.root_dir:
            try:
                os.rmdir(self.root_dir)  # only its mount point: the tmpfs went with the namespace
            except OSError:
                pass

    # -- one request

    def ask(self, request: dict, args=(), what: str = "") -> object:
        """Send one request; the decoded answer, or a SubmissionError naming `what` (e.g. bpe.learn_merges)."""
        with self.lock:
            if self.deadline is not None and time.monotonic() >= self.deadline:  # (hypothesis replaying a failure)
                raise WorkerTimeout(f"{what} ran past the time limit")
            if self.proc is None or self.starting:
                began = time.monotonic()
                self.start() if self.proc is None else self._ready()
                if self.deadline is not None:
                    self.deadline += time.monotonic() - began  # starting the worker is not the test's time
            deadline = self.deadline if self.deadline is not None else time.monotonic() + self.config["timeout"]
            header, blobs = wire.encode(args, ref=self._outgoing, classes=True)  # a config the grader made is rebuilt
            request = {**request, "args": header, "release": self.pending_release, "grad": torch.is_grad_enabled()}
            self.pending_release = []
            try:
                self._write(wire.pack(request, blobs), deadline)
                answer, blobs = self._read(deadline)
            except SubmissionError:
                self.kill()
                raise
            except BaseException:  # interrupted mid-message (pytest-timeout): the pipe is out of step
                self.kill()
                raise
            self.flags += [f for f in answer.get("flags", []) if isinstance(f, str)][:10]
            try:
                reply = wire.decode(answer.get("reply"), blobs, deref=self._proxy)
            except (wire.WireError, RecursionError, ValueError, TypeError) as e:
                self.kill()
                raise BadAnswer(f"{what} answered with something that is not plain data", str(e)) from None
            if not isinstance(reply, dict):
                self.kill()
                raise BadAnswer(f"{what} answered out of protocol")
            if "error" in reply:
                raise self._error(reply["error"], what)
            if "ok" not in reply:
                self.kill()
                raise BadAnswer(f"{what} answered out of protocol")
            self._write_back(args, reply.get("wrote", []), what)
            return reply["ok"]

    def _error(self, e, what: str) -> SubmissionError:
        if not isinstance(e, dict):
            return BadAnswer(f"{what} answered out of protocol")
        name = str(e.get("type", "Exception"))
        name = name if name.isidentifier() and len(name) <= 40 else "Exception"
        private = f"{name}: {str(e.get('message', ''))[:2000]}\n{str(e.get('traceback', ''))[-3000:]}"
        if e.get("unfinished"):
            return NotImplementedYet(f"{what} is not implemented yet", private)
        error = _raised(name, bool(e.get("builtin")))(f"{what} raised {name}", private)
        error.args = (str(e.get("message", ""))[:2000],)  # what pytest.raises(match=...) reads
        return error

    def _write_back(self, args, wrote, what: str) -> None:
        """Arguments the call changed in place, copied into the grader's objects after checking them."""
        if not wrote or not isinstance(args, tuple) or len(args) != 3:
            return
        positional, keywords, _ = args
        for entry in wrote:
            if not isinstance(entry, list) or len(entry) != 2:
                raise BadAnswer(f"{what} answered out of protocol")
            key, new = entry
            try:
                old = positional[key] if isinstance(key, int) else keywords[key]
            except (IndexError, KeyError, TypeError):
                raise BadAnswer(f"{what} answered out of protocol") from None
            if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
                if new.shape != old.shape or new.dtype != old.dtype:
                    raise BadAnswer(f"{what} changed an argument's shape or dtype in place")
                with torch.no_grad():
                    old.copy_(new)
            elif isinstance(old, np.ndarray) and isinstance(new, np.ndarray):
                if new.shape != old.shape or new.dtype != old.dtype:
                    raise BadAnswer(f"{what} changed an argument's shape or dtype in place")
                old[...] = new
            elif isinstance(old, torch.Generator) and isinstance(new, torch.Generator):
                old.set_state(new.get_state())
            else:
                raise BadAnswer(f"{what} answered out of protocol")

    def _proxy(self, ref: wire.Ref):
        self.live[ref.id] = self.live.get(ref.id, 0) + 1  # the worker gives one handle per object: count proxies
        return Remote(self, ref.id, self.generation, ref.type)

    @staticmethod
    def _outgoing(obj) -> wire.Ref:
        """An argument that is one of the worker's objects goes as its handle; anything else that is not plain
        data is refused here, before anything is sent."""
        if isinstance(obj, RemoteModule):
            obj = obj._resolve()
        if isinstance(obj, Remote):
            return wire.Ref(obj._target(), obj._type)
        raise wire.WireError(f"a {type(obj).__module__}.{type(obj).__qualname__} is not plain data: build it where "
                             "it is used (student(...) gives the submission's own classes)")

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeout("ran past the time limit")
            _, ready, _ = select.select([], [self.to_worker], [], left)
            if ready:
                try:
                    view = view[os.write(self.to_worker, view[:1 << 20]):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    raise self._died() from None

    def _read(self, deadline: float):
        def read_exactly(n: int) -> bytes:
            chunks, left = [], n
            while left:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WorkerTimeout("ran past the time limit")
                ready, _, _ = select.select([self.from_worker], [], [], remaining)
                if not ready:
                    continue
                chunk = os.read(self.from_worker, min(left, 1 << 20))
                if not chunk:
                    raise self._died()
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        try:
            return wire.read_frame(read_exactly, max_arrays=self.config["max_answer_mb"] << 20)
        except wire.WireError as e:
            raise BadAnswer("answered with something that is not plain data", str(e)) from None

    def _died(self) -> WorkerCrashed:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        how = ("was killed (out of memory, or a signal)" if code is not None and code >= 128 or (code or 0) < 0
               else f"exited with code {code}")
        return WorkerCrashed(f"the submission's process {how}", self.output.text())


class _Tail:
    """What the submission printed: the first and last 8 KB and the byte count, for the instructor."""

    def __init__(self, keep: int = 8192):
        self.keep, self.head, self.tail, self.total = keep, b"", b"", 0

    def follow(self, fd: int) -> None:
        def drain():
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    break
                if not chunk:
                    break
                self.total += len(chunk)
                if len(self.head) < self.keep:
                    self.head += chunk[:self.keep - len(self.head)]
                self.tail = (self.tail + chunk)[-self.keep:]
            os.close(fd)
        threading.Thread(target=drain, daemon=True).start()

    def text(self) -> str:
        if self.total <= 2 * self.keep:
            body = self.head + self.tail[-(self.total - len(self.head)):] if self.total > len(self.head) else self.head
        else:
            body = self.head + f"\n[... {self.total - 2 * self.keep} bytes ...]\n".encode() + self.tail
        return body.decode("utf-8", "replace")


_CONNECTION: Connection | None = None


@contextlib.contextmanager
def connected(config: dict):
    """Reach student code through a worker made from `config` inside the block (the grader's tests use it)."""
    global _CONNECTION
    previous, _CONNECTION = _CONNECTION, Connection(config)
    try:
        yield _CONNECTION
    finally:
        _CONNECTION.kill()
        _CONNECTION = previous


def connection() -> Connection:
    global _CONNECTION
    if _CONNECTION is None:
        with open(os.environ[CONFIG_ENV], encoding="utf-8") as f:
            _CONNECTION = Connection(json.load(f))
    return _CONNECTION


# ---------------------------------------------------------------------------------------- proxies


class Remote:
    """An object that lives in the worker. Attributes, calls, items and assignments go there."""

    __slots__ = ("_conn", "_id", "_generation", "_type", "__weakref__")

    def __init__(self, conn: Connection, ref_id: int, generation: int, type_name: str):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_id", ref_id)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_type", type_name)
        weakref.finalize(self, _release, conn, ref_id, generation)

    def _target(self) -> int:
        if self._generation != self._conn.generation or self._conn.proc is None:
            raise GoneObject(f"a {self._type} of the submission's is gone: its process stopped earlier in this test")
        return self._id

    def _ask(self, request, args=(), what=""):
        return self._conn.ask({**request, "obj": self._target()}, args, what)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._ask({"op": "getattr", "name": name}, what=f"{self._type}.{name}")

    def __setattr__(self, name, value):
        self._ask({"op": "setattr", "name": name}, (value,), what=f"setting {self._type}.{name}")

    def __call__(self, *args, **kwargs):
        return self._ask({"op": "call"}, (list(args), kwargs, None), what=self._type)

    def __getitem__(self, key):
        return self._ask({"op": "getitem"}, (key,), what=f"{self._type}[...]")

    def __len__(self):
        n = self._ask({"op": "len"}, what=f"len({self._type})")
        if type(n) is not int or n < 0:
            raise BadAnswer(f"len({self._type}) is not a length")
        return n

    def __iter__(self):
        items = self._ask({"op": "list"}, what=f"list({self._type})")
        if not isinstance(items, list):
            raise BadAnswer(f"list({self._type}) is not a list")
        return iter(items)

    def __repr__(self):
        return f"<the submission's {self._type}>"


def _release(conn: Connection, ref_id: int, generation: int) -> None:
    if conn.generation == generation and conn.proc is not None:
        conn.live[ref_id] = conn.live.get(ref_id, 1) - 1
        if conn.live[ref_id] <= 0:
            del conn.live[ref_id]
            conn.pending_release.append(ref_id)


class RemoteModule(Remote):
    """The student's module `name`, imported in the worker on first use (again after a restart)."""

    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_module", None)

    def _resolve(self) -> Remote:
        conn = connection()
        if self._name in conn.broken_imports:
            raise conn.broken_imports[self._name]
        if self._module is None or self._module._generation != conn.generation or conn.proc is None:
            budget = (conn.deadline or float("inf")) - time.monotonic()
            try:
                module = conn.ask({"op": "import", "module": self._name}, what=f"importing {self._name}")
            except SubmissionError as e:
                failed = ImportFailed(f"{self._name} could not be imported ({e.reason}: {e.detail})", e.private)
                if not isinstance(e, WorkerTimeout) or budget >= conn.config["timeout"] / 2:
                    conn.broken_imports[self._name] = failed  # a fair attempt failed: the next tests fail at once
                raise failed from None
            if not isinstance(module, Remote):
                raise BadAnswer(f"importing {self._name} gave no module")
            object.__setattr__(self, "_module", module)
        return self._module

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        value = getattr(self._resolve(), name)
        if isinstance(value, Remote):
            object.__setattr__(value, "_type", f"{self._name}.{name}")
        return value

    def __setattr__(self, name, value):
        setattr(self._resolve(), name, value)

    def __call__(self, *args, **kwargs):
        raise TypeError(f"the module {self._name} is not callable")

    def __repr__(self):
        return f"<the submission's {self._name}>"


# ---------------------------------------------------------------------------------------- helpers


def value_and_grad(fn, *args, grad_output, **kwargs):
    """(fn(*args, **kwargs), gradients) where the gradients are those of every tensor in `args` that
    requires one, for the output's cotangent `grad_output`; computed where `fn` lives."""
    if isinstance(fn, Remote):
        out = fn._ask({"op": "call", "mode": "vjp"}, (list(args), kwargs, grad_output), what=fn._type)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], tuple)):
            raise BadAnswer(f"{fn._type} answered out of protocol")
        return out
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    out = fn(*args, **kwargs)
    outputs = list(out) if isinstance(out, (tuple, list)) else [out]
    cotangents = list(grad_output) if isinstance(grad_output, (tuple, list)) else [grad_output]
    grads = torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True) if inputs else ()
    return out, tuple(grads)


class _Shapes(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.shapes.append(tuple(out.shape))
        return out


def shapes_during(fn, *args, **kwargs):
    """(fn(*args, **kwargs), the shapes of every tensor torch produced during the call)."""
    if isinstance(fn, Remote):
        out = fn._ask({"op": "call", "mode": "trace"}, (list(args), kwargs, None), what=fn._type)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], list)):
            raise BadAnswer(f"{fn._type} answered out of protocol")
        return out[0], [tuple(s) for s in out[1]]
    with _Shapes() as record:
        out = fn(*args, **kwargs)
    return out, record.shapes


def each(fn, arguments, **kwargs) -> list:
    """[fn(*a, **kwargs) for a in arguments] (a bare item is one argument), in one round trip when graded."""
    arguments = [a if isinstance(a, (list, tuple)) else (a,) for a in arguments]
    if isinstance(fn, Remote):
        out = fn._ask({"op": "call", "mode": "map"}, ([list(a) for a in arguments], kwargs, None), what=fn._type)
        if not isinstance(out, list) or len(out) != len(arguments):
            raise BadAnswer(f"{fn._type} answered out of protocol")
        return out
    return [fn(*a, **kwargs) for a in arguments]


def wire_in(monkeypatch, module: str, names) -> None:
    """Make the library call the student's `module.name` for each name, wherever it is bound by name.

    By hand nothing changes (the library's module is the student's). Graded, the grader's own
    library (the trainer, say) calls the worker for these functions and carries on with the
    plain data they return; everything else stays the instructor's.
    """
    if not grading():
        return
    theirs = student(module)
    ours = importlib.import_module(module)
    for name in names:
        original = getattr(ours, name)
        remote = getattr(theirs, name)
        for loaded in list(__import__("sys").modules.values()):
            if loaded is not None and getattr(loaded, "__name__", "").startswith("minilm") \
                    and getattr(loaded, name, None) is original:
                monkeypatch.setattr(loaded, name, remote)
