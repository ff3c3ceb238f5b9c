"""What crosses between the grader and a student's code: plain data as JSON, arrays as raw buffers.

The grader (trusted) and the worker that imports a submission (untrusted) exchange messages
over a pipe. A message is a JSON header followed by the raw bytes of its arrays, laid out the
way safetensors lays out a file: the header gives each array's dtype, shape and byte length,
the bytes follow. Nothing is ever unpickled and no class named in a message is ever
instantiated by the grader: what the worker sends back decodes to None, bool, int, float,
str, bytes, list, tuple, dict, set, numpy arrays and scalars, torch tensors, dtypes, devices,
generators' states, `Record`s (a dataclass's fields, read-only) and `Ref`s (a handle on an
object that stays in the worker).

Design choices:
- This module imports only the standard library, numpy and torch: the worker loads it from
  the handout's own copy before any student code, and the grader from the instructor's.
- Every limit is checked before the bytes are read or allocated: the header's length, each
  array's length against its dtype and shape, the total, the nesting depth. A message that
  breaks one is refused whole (`WireError`); the grader scores the test it answered 0.
- Tensors travel with their device and `requires_grad`, parameters as parameters, so a
  module's weights set from the grader stay weights in the worker. numpy arrays come back as
  numpy arrays, torch tensors as torch tensors: a test checks types as it would in-process.
- A dict is always sent as a list of pairs, so keys keep their type (bytes, tuples, ints).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import math
import os
import struct

import numpy as np
import torch

MAX_HEADER = 64 << 20  # bytes of JSON in one message
MAX_ARRAYS = 1 << 30  # bytes of array data in one message
MAX_DEPTH = 64  # nesting of lists, dicts, tuples
MAX_ITEMS = 1 << 22  # elements of one list, tuple, dict or set

TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
    torch.float32, torch.float64, torch.complex64, torch.complex128)}
NUMPY_KINDS = "biufc"  # bool, signed, unsigned, float, complex: never object, string or void


class WireError(ValueError):
    """A message that is not plain data, or breaks a limit."""


@dataclasses.dataclass(frozen=True)
class Ref:
    """A handle on an object that lives in the worker (a module, a function, an nn.Module, ...)."""

    id: int
    type: str  # the object's type name, for messages only


class Record:
    """A dataclass's fields as read-only attributes (a model's output, say); never its class."""

    def __init__(self, type_name: str, fields: dict):
        object.__setattr__(self, "_type", type_name)
        object.__setattr__(self, "_fields", dict(fields))

    def __getattr__(self, name):
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"{self._type} has no field {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError(f"{self._type} from the submission is read-only")

    def __eq__(self, other):
        return isinstance(other, Record) and (self._type, self._fields) == (other._type, other._fields)

    def __repr__(self):
        return f"{self._type}({', '.join(f'{k}=...' for k in self._fields)})"


# ---------------------------------------------------------------------------------------- encoding


def encode(value, *, ref=None, classes: bool = False):
    """(header object, list of byte buffers) for `value`.

    `ref(obj)` turns what is not plain data into a Ref (the worker's side); without it such a
    value is a WireError (the grader's side sends only plain data and Refs). `classes` sends a
    dataclass with its class's import path, so the worker can rebuild a config the grader made.
    """
    blobs: list[bytes] = []

    def put(data: bytes) -> int:
        blobs.append(data)
        return len(blobs) - 1

    def walk(v, depth):
        if depth > MAX_DEPTH:
            raise WireError(f"nested deeper than {MAX_DEPTH}")
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int) and type(v) in (int,):
            return v
        if type(v) is float:
            return v if math.isfinite(v) else {"$": "float", "v": repr(v)}
        if isinstance(v, Ref):
            return {"$": "ref", "id": v.id, "type": v.type}
        if isinstance(v, torch.Tensor):
            t = v.detach()
            name = str(t.dtype).removeprefix("torch.")
            if name not in TORCH_DTYPES:
                raise WireError(f"a tensor of dtype {t.dtype} cannot be sent")
            data = t.to("cpu").contiguous()
            raw = data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b""
            return {"$": "tensor", "i": put(raw), "dtype": name, "shape": list(t.shape), "device": str(t.device),
                    "grad": bool(v.requires_grad), "param": isinstance(v, torch.nn.Parameter)}
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in NUMPY_KINDS or v.dtype.hasobject:
                raise WireError(f"a numpy array of dtype {v.dtype} cannot be sent")
            a = np.ascontiguousarray(v)
            return {"$": "ndarray", "i": put(a.tobytes()), "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(v, np.generic):
            if v.dtype.kind not in NUMPY_KINDS:
                raise WireError(f"a numpy scalar of dtype {v.dtype} cannot be sent")
            return {"$": "npscalar", "dtype": v.dtype.str, "i": put(np.asarray(v).tobytes())}
        if isinstance(v, bytes):
            return {"$": "bytes", "v": base64.b64encode(v).decode("ascii")}
        if isinstance(v, (float, int)):  # subclasses (np.float64 is a float): by value
            return walk(float(v) if isinstance(v, float) else int(v), depth)
        if isinstance(v, torch.dtype):
            return {"$": "dtype", "v": str(v).removeprefix("torch.")}
        if isinstance(v, torch.device):
            return {"$": "device", "v": str(v)}
        if isinstance(v, torch.Generator):
            return {"$": "generator", "device": str(v.device), "i": put(v.get_state().numpy().tobytes())}
        if isinstance(v, slice):
            return {"$": "slice", "v": [walk(v.start, depth + 1), walk(v.stop, depth + 1), walk(v.step, depth + 1)]}
        if v is Ellipsis:
            return {"$": "ellipsis"}
        if isinstance(v, (list, tuple, set, frozenset, dict)) and len(v) > MAX_ITEMS:
            raise WireError(f"a container of {len(v)} items (more than {MAX_ITEMS})")
        if isinstance(v, dict):
            return {"$": "dict", "v": [[walk(k, depth + 1), walk(x, depth + 1)] for k, x in v.items()]}
        if isinstance(v, list):
            return [walk(x, depth + 1) for x in v]
        if isinstance(v, tuple):  # named tuples (torch.Size too) go as plain tuples
            return {"$": "tuple", "v": [walk(x, depth + 1) for x in v]}
        if isinstance(v, (set, frozenset)):
            return {"$": type(v).__name__, "v": [walk(x, depth + 1) for x in v]}
        if isinstance(v, Record):
            return {"$": "record", "type": v._type, "v": {k: walk(x, depth + 1) for k, x in v._fields.items()}}
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            fields = {f.name: walk(getattr(v, f.name), depth + 1) for f in dataclasses.fields(v)}
            out = {"$": "record", "type": type(v).__name__, "v": fields}
            if classes:
                out["class"] = f"{type(v).__module__}.{type(v).__qualname__}"
            elif ref is not None:  # the worker's answer: its properties too (config.kv_heads), where plain
                for name in dir(type(v)):
                    if isinstance(getattr(type(v), name, None), property) and name not in fields:
                        try:
                            fields[name] = walk(getattr(v, name), depth + 1)
                        except Exception:
                            pass
            return out
        if ref is not None:
            handle = ref(v)
            return {"$": "ref", "id": handle.id, "type": handle.type}
        raise WireError(f"a {type(v).__module__}.{type(v).__qualname__} is not plain data: build it where it "
                        "is used (student(...) gives the submission's own classes)")

    return walk(value, 0), blobs


# ---------------------------------------------------------------------------------------- decoding


def decode(header, blobs: list[bytes], *, deref=None, make_class=None):
    """The value `encode` wrote. `deref(Ref)` maps handles (the worker maps them to its objects, the
    grader to proxies); `make_class(path, fields)` rebuilds a dataclass (the worker's side only)."""

    def blob(i):
        if type(i) is not int or not 0 <= i < len(blobs):
            raise WireError(f"array index {i!r} out of range")
        return blobs[i]

    def shape_of(x, dtype_size):
        if not isinstance(x, list) or len(x) > 64 or not all(type(n) is int and n >= 0 for n in x):
            raise WireError(f"bad shape {x!r}")
        return x, math.prod(x) * dtype_size

    def walk(v, depth):
        if depth > MAX_DEPTH:
            raise WireError(f"nested deeper than {MAX_DEPTH}")
        if v is None or type(v) in (bool, int, float, str):
            return v
        if type(v) is list:
            if len(v) > MAX_ITEMS:
                raise WireError("a list longer than the limit")
            return [walk(x, depth + 1) for x in v]
        if type(v) is not dict or not isinstance(v.get("$"), str):
            raise WireError(f"unexpected {type(v).__name__} in a message")
        kind = v["$"]
        if kind == "float":
            if v.get("v") not in ("nan", "inf", "-inf"):
                raise WireError("bad float")
            return float(v["v"])
        if kind == "bytes":
            return base64.b64decode(_str(v.get("v")), validate=True)
        if kind == "tuple":
            return tuple(walk(x, depth + 1) for x in _list(v.get("v")))
        if kind in ("set", "frozenset"):
            items = [walk(x, depth + 1) for x in _list(v.get("v"))]
            try:
                return set(items) if kind == "set" else frozenset(items)
            except TypeError:
                raise WireError("unhashable item in a set") from None
        if kind == "dict":
            out = {}
            for pair in _list(v.get("v")):
                if type(pair) is not list or len(pair) != 2:
                    raise WireError("a dict entry that is not a pair")
                key = walk(pair[0], depth + 1)
                try:
                    out[key] = walk(pair[1], depth + 1)
                except TypeError:
                    raise WireError(f"unhashable dict key of type {type(key).__name__}") from None
            return out
        if kind == "tensor":
            name = v.get("dtype")
            if name not in TORCH_DTYPES:
                raise WireError(f"tensor dtype {name!r} is not accepted")
            dtype = TORCH_DTYPES[name]
            shape, size = shape_of(v.get("shape"), torch.empty((), dtype=dtype).element_size())
            raw = blob(v.get("i"))
            if len(raw) != size:
                raise WireError(f"tensor of shape {shape} and dtype {name} needs {size} bytes, got {len(raw)}")
            t = (torch.frombuffer(bytearray(raw), dtype=dtype) if size else torch.empty(0, dtype=dtype)).reshape(shape)
            device = _str(v.get("device", "cpu"))
            if device != "cpu" and device.startswith("cuda") and torch.cuda.is_available():
                t = t.to(device)
            if v.get("param"):
                return torch.nn.Parameter(t, requires_grad=bool(v.get("grad")))
            return t.requires_grad_(bool(v.get("grad"))) if t.is_floating_point() or t.is_complex() else t
        if kind in ("ndarray", "npscalar"):
            try:
                dtype = np.dtype(_str(v.get("dtype")))
            except TypeError:
                raise WireError(f"numpy dtype {v.get('dtype')!r} is not accepted") from None
            if dtype.kind not in NUMPY_KINDS or dtype.hasobject:
                raise WireError(f"numpy dtype {dtype} is not accepted")
            shape, size = shape_of(v.get("shape", []), dtype.itemsize)
            raw = blob(v.get("i"))
            if len(raw) != size:
                raise WireError(f"array of shape {shape} and dtype {dtype} needs {size} bytes, got {len(raw)}")
            array = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
            return array[()] if kind == "npscalar" else array
        if kind == "dtype":
            if v.get("v") not in TORCH_DTYPES:
                raise WireError(f"dtype {v.get('v')!r} is not accepted")
            return TORCH_DTYPES[v["v"]]
        if kind == "device":
            return torch.device(_str(v.get("v")))
        if kind == "generator":
            device = _str(v.get("device", "cpu"))
            g = torch.Generator(device if device == "cpu" or torch.cuda.is_available() else "cpu")
            state = torch.frombuffer(bytearray(blob(v.get("i"))), dtype=torch.uint8)
            try:
                g.set_state(state)
            except RuntimeError as e:
                raise WireError(f"bad generator state: {e}") from None
            return g
        if kind == "slice":
            start, stop, step = (walk(x, depth + 1) for x in _list(v.get("v"), 3))
            return slice(start, stop, step)
        if kind == "ellipsis":
            return Ellipsis
        if kind == "record":
            fields = v.get("v")
            if type(fields) is not dict or not all(type(k) is str for k in fields):
                raise WireError("bad record")
            values = {k: walk(x, depth + 1) for k, x in fields.items()}
            if make_class is not None and "class" in v:
                return make_class(_str(v["class"]), values)
            return Record(_str(v.get("type", "record"))[:80], values)
        if kind == "ref":
            if type(v.get("id")) is not int:
                raise WireError("bad reference")
            r = Ref(v["id"], _str(v.get("type", "object"))[:80])
            if deref is None:
                raise WireError("a reference where none is accepted")
            return deref(r)
        raise WireError(f"unknown kind {kind!r}")

    return walk(header, 0)


def _str(x) -> str:
    if type(x) is not str:
        raise WireError(f"expected a string, got {type(x).__name__}")
    return x


def _list(x, n: int | None = None) -> list:
    if type(x) is not list or (n is not None and len(x) != n):
        raise WireError("expected a list" + (f" of {n}" if n else ""))
    return x


# ---------------------------------------------------------------------------------------- framing


def pack(header_obj, blobs: list[bytes]) -> bytes:
    """One frame: 4-byte header length, JSON, 4-byte array count, then (8-byte length, bytes) each."""
    head = json.dumps(header_obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    parts = [struct.pack("<I", len(head)), head, struct.pack("<I", len(blobs))]
    for b in blobs:
        parts += [struct.pack("<Q", len(b)), b]
    return b"".join(parts)


def read_frame(read_exactly, *, max_header: int = MAX_HEADER, max_arrays: int = MAX_ARRAYS):
    """(header object, blobs) from `read_exactly(n)`; every length is checked before it is read."""
    (n,) = struct.unpack("<I", read_exactly(4))
    if n > max_header:
        raise WireError(f"a header of {n} bytes (more than {max_header})")
    try:
        header = json.loads(read_exactly(n).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WireError(f"the header is not JSON ({type(e).__name__})") from None
    (count,) = struct.unpack("<I", read_exactly(4))
    if count > 1 << 20:
        raise WireError(f"{count} arrays in one message")
    blobs, total = [], 0
    for _ in range(count):
        (size,) = struct.unpack("<Q", read_exactly(8))
        total += size
        if total > max_arrays:
            raise WireError(f"more than {max_arrays >> 20} MB of arrays in one answer")
        blobs.append(read_exactly(size))
    return header, blobs


def fd_reader(fd: int):
    """read_exactly(n) over a file descriptor (EOFError when the other side is gone)."""
    def read_exactly(n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                raise EOFError("the other side closed the pipe")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    return read_exactly


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
