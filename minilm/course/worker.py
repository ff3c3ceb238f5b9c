"""The worker: the only process that imports a submission. It answers the grader's calls with plain data.

The grader starts it inside the walls (minilm/course/sandbox.py) with the grading tree (the
handout with the student's files put in) first on the import path, and talks to it over two
pipes. Each request names one operation on an object the worker holds:

    import   NAME                  -> a handle on module NAME
    getattr  OBJ NAME              -> OBJ.NAME
    setattr  OBJ NAME VALUE        -> None
    getitem  OBJ KEY               -> OBJ[KEY]
    len      OBJ                   -> len(OBJ)
    list     OBJ                   -> list(OBJ)
    call     OBJ ARGS KWARGS MODE  -> OBJ(*ARGS, **KWARGS); MODE "vjp" also returns the gradients
                                      of the tensor arguments that require them, "trace" the
                                      shapes of every tensor torch made during the call, "map"
                                      one call per item of ARGS (a list of argument lists)
    release  IDS                   -> forget handles

and the answer is {"ok": VALUE} or {"error": {...}}. A value that is not plain data (see
minilm/course/wire.py) goes back as a handle. After a call, tensor, array and generator
arguments that the call changed in place are sent back too ("wrote"), so a function whose
contract is to update its arguments (AdamW's step) is graded as it is used.

Design choices:
- Nothing here decides anything: the grader checks every answer, compares it with its own
  reference and scores the test. The worker only reports; lying costs the liar its points.
- The one report beyond values is `flags`: a call in which the submission's own code ran the
  reference the tests compare with (listed per assignment in the catalog). The grader scores
  such a test 0; a worker that hides the flag gains nothing it could not gain by copying.
- Exceptions raised by the submission are answered with their type and message; the grader
  decides what, if anything, a student sees of them.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import traceback

import numpy as np
import torch

from minilm.course import boundary, wire

UNFINISHED = __import__("re").compile(r"assignment ([a-z][a-z0-9_-]*): implement ")
_PLUMBING = tuple(os.path.dirname(os.path.realpath(m.__file__)) + os.sep for m in (torch, functools))


class Worker:
    def __init__(self, config: dict):
        self.objects: dict[int, object] = {}
        self.ids: dict[int, int] = {}  # id(object) -> handle
        self.next_id = 1
        self.flags: list[str] = []
        self.student_files = {os.path.realpath(p) for p in config.get("student_files", [])}
        self.references = []
        for ref in config.get("references", []):
            self._watch(ref)

    # -- handles

    def ref(self, obj) -> wire.Ref:
        key = id(obj)
        if key not in self.ids:
            self.ids[key] = self.next_id
            self.objects[self.next_id] = obj
            self.next_id += 1
        return wire.Ref(self.ids[key], type(obj).__qualname__)

    def deref(self, r: wire.Ref):
        if r.id not in self.objects:
            raise wire.WireError(f"no object with handle {r.id}")
        return self.objects[r.id]

    def release(self, ids) -> None:
        for i in ids:
            obj = self.objects.pop(i, None)
            if obj is not None:
                self.ids.pop(id(obj), None)

    @staticmethod
    def make_class(path: str, fields: dict):
        """A dataclass the grader built (a config): rebuilt from the submission's own class."""
        module, _, name = path.rpartition(".")
        cls = importlib.import_module(module)
        for part in name.split("."):
            cls = getattr(cls, part)
        return cls(**fields)

    # -- references the submission must not call

    def _watch(self, target: str) -> None:
        """Wrap `target` (module.attr or module.Class.attr) so that a call from the submission's own code
        (or a call the grader made straight into it) is flagged."""
        parts = target.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                owner = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for name in parts[cut:-1]:
                    owner = getattr(owner, name)
                original = getattr(owner, parts[-1])
            except AttributeError:
                return
            break
        else:
            return
        worker = self
        own = os.path.realpath(original.__code__.co_filename) if hasattr(original, "__code__") else ""
        own = "" if own in self.student_files else own  # a reference kept in the student's own file

        @functools.wraps(original)
        def watched(*args, **kwargs):
            # Who called it: the nearest frame outside the reference itself, torch and the standard library's
            # plumbing. The submission's own file is a flag; the library (attention() choosing sdpa) is not.
            frame = sys._getframe(1)
            while frame is not None:
                name = os.path.realpath(frame.f_code.co_filename)
                if name != own and not name.startswith(_PLUMBING):
                    if name in worker.student_files:
                        worker.flags.append(target)
                    break
                frame = frame.f_back
            return original(*args, **kwargs)

        watched.__minilm_reference__ = target
        setattr(owner, parts[-1], watched)
        self.references.append(target)

    def _direct(self, fn) -> None:
        """A call the grader makes straight into a reference (the student bound their name to it)."""
        while isinstance(fn, functools.partial):
            fn = fn.func
        target = getattr(getattr(fn, "__func__", fn), "__minilm_reference__", None)
        if target:
            self.flags.append(target)

    # -- operations

    def handle(self, request: dict, blobs: list[bytes]):
        op = request.get("op")
        self.release(request.get("release", []))
        args = wire.decode(request.get("args", {"$": "tuple", "v": []}), blobs, deref=self.deref,
                           make_class=self.make_class)
        if op == "import":
            return importlib.import_module(request["module"]), []
        obj = self.deref(wire.Ref(request["obj"], ""))
        if op == "getattr":
            return getattr(obj, request["name"]), []
        if op == "setattr":
            (value,) = args
            setattr(obj, request["name"], value)
            return None, []
        if op == "getitem":
            (key,) = args
            return obj[key], []
        if op == "len":
            return len(obj), []
        if op == "list":
            return list(obj), []
        if op == "call":
            positional, keywords, grad_output = args
            with torch.set_grad_enabled(bool(request.get("grad", True))):  # the grader's torch.no_grad() holds here
                return self.call(obj, positional, keywords, request.get("mode", "plain"), grad_output)
        raise wire.WireError(f"unknown operation {op!r}")

    def call(self, fn, args: list, kwargs: dict, mode: str, grad_output):
        self._direct(fn)
        before = {key: _fingerprint(v) for key, v in _top_level(args, kwargs)}
        if mode == "vjp":
            inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
            with torch.enable_grad():
                out = fn(*args, **kwargs)
                outputs = list(out) if isinstance(out, (tuple, list)) else [out]
                grad_outputs = list(grad_output) if isinstance(grad_output, (tuple, list)) else [grad_output]
                grads = torch.autograd.grad(outputs, inputs, grad_outputs, allow_unused=True) if inputs else ()
            value = (out, tuple(grads))
        elif mode == "map":  # one call per argument list, answered together (a schedule over every step)
            value = [fn(*(a if isinstance(a, (list, tuple)) else (a,)), **kwargs) for a in args]
        elif mode == "trace":  # the same recording as by hand: boundary.shapes_during on the local function
            value = boundary.shapes_during(fn, *args, **kwargs)
        else:
            value = fn(*args, **kwargs)
        wrote = [[key, v] for key, v in _top_level(args, kwargs) if _fingerprint(v) != before[key]]
        return value, wrote


def _top_level(args, kwargs):
    for i, v in enumerate(args):
        if isinstance(v, (torch.Tensor, np.ndarray, torch.Generator)):
            yield i, v
    for k, v in kwargs.items():
        if isinstance(v, (torch.Tensor, np.ndarray, torch.Generator)):
            yield k, v


def _fingerprint(v):
    if isinstance(v, torch.Tensor):
        return (v._version, v.data_ptr())
    if isinstance(v, torch.Generator):
        return v.get_state().numpy().tobytes()
    return v.tobytes()


def _error(e: BaseException) -> dict:
    found = None
    seen, todo = set(), [e]
    while todo:  # the unfinished marker may sit in a cause (or inside Triton's InterpreterError text)
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        m = UNFINISHED.search(str(x))
        if m:
            found = m.group(1)
            break
        todo += [x.__cause__, x.__context__]
    return {"type": type(e).__name__, "builtin": type(e).__module__ == "builtins", "unfinished": found,
            "message": str(e)[:2000], "traceback": "".join(traceback.format_exception(e))[-4000:]}


def serve(fd_in: int, fd_out: int, config: dict) -> None:
    read = wire.fd_reader(fd_in)
    worker = Worker(config)
    _send(fd_out, {"ready": True, "references": worker.references}, [])
    while True:
        try:
            request, blobs = wire.read_frame(read)
        except EOFError:
            return
        worker.flags = []
        try:
            value, wrote = worker.handle(request, blobs)
            header, out_blobs = wire.encode({"ok": value, "wrote": wrote}, ref=worker.ref)
        except BaseException as e:  # the submission's sys.exit() and pytest.skip() too: answered, not obeyed
            if isinstance(e, KeyboardInterrupt):
                raise
            header, out_blobs = wire.encode({"error": _error(e)})
        _send(fd_out, {"reply": header, "flags": sorted(set(worker.flags))}, out_blobs)


def _send(fd: int, header: dict, blobs: list[bytes]) -> None:
    wire.write_all(fd, wire.pack(header, blobs))


def main() -> None:
    """Entry point: `python -I -S -c BOOT` calls this with the pipes' descriptors and the config in
    MINILM_WORKER_CONFIG (JSON); stdout and stderr are the student's, captured by the grader."""
    config = json.loads(os.environ.pop("MINILM_WORKER_CONFIG"))
    fd_in, fd_out = config["fds"]
    sys.stdin = open(os.devnull)
    serve(fd_in, fd_out, config)
    os._exit(0)  # no atexit hooks of the submission's: nothing of theirs runs after the last answer
