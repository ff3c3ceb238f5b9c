"""Checkpoints: a folder a fine-tuning run, `fill-mask` or `--resume` can read back.

A checkpoint folder holds

    model.safetensors   the weights (tied weights stored once)
    config.json         {"model_class", "model_config", "model_kwargs", "files": {name: sha256}, "extra"}
    tokenizer.json      the tokenizer, when one was given
    trainer_state.pt    optimiser, gradient scaler, RNG states and step (only for resumable checkpoints)

Design choices:
- safetensors for weights: no pickle, so loading a checkpoint cannot run code. The trainer
  state is a `torch.save` file read back with `weights_only=True` for the same reason.
- Atomic: the whole folder is written under a temporary name and renamed into place, so
  an interrupted write (Ctrl-C, a full disk, a crash) never leaves a half checkpoint under
  the real name, and the previous one stays intact until the new one is complete. A write
  that fails (a full disk) is one CheckpointError naming the file, saying nothing was saved.
- Refuse rather than guess: config.json records the sha256 of every file, so a truncated
  or edited file is caught before it is parsed; missing, unexpected or mis-shaped weights
  are listed by name.
- Replacing a folder (`final/` at the end of every run) is crash-safe: `atomic.atomic_folder`
  (the one way minilm replaces a folder) writes the new one whole before the old one is moved
  aside, and `recover` finishes or undoes a replacement that a kill interrupted, so a reader
  finds the old folder or the new one, never none.
- The model class is stored by name (`MaskedLM`, or `package.module.Class` for a class
  outside `minilm.nn.model`) with the constructor arguments it needs besides its config
  (e.g. `num_labels`), read off the model's attributes of the same name. Loading never
  imports a module a file names: only minilm's own model classes are looked up by name; a
  class of your own is passed in (`load_model(path, model_class=MyModel)`).
"""
from __future__ import annotations

import importlib
import inspect
import json
import pickle
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import PRETRAINED_DIR, ModelConfig  # noqa: F401  (PRETRAINED_DIR re-exported)
from minilm.store.atomic import atomic_folder, recover_folder
from minilm.store.fetch import sha256_file

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
TRAINER_STATE = "trainer_state.pt"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not match what it is loaded into."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


MODEL_MODULES = ("minilm.nn.model", "minilm.nn.electra")  # where the classes a checkpoint may name live


def _class_name(cls: type) -> str:
    return cls.__name__ if cls.__module__ in MODEL_MODULES else f"{cls.__module__}.{cls.__qualname__}"


def _model_classes() -> dict[str, type]:
    """minilm's own model classes by name (the body and the task models, not their parts such as Block):
    the only classes a checkpoint may name."""
    from minilm.nn.model import TaskModel, Transformer

    return {name: obj for module in map(importlib.import_module, MODEL_MODULES) for name, obj in vars(module).items()
            if isinstance(obj, type) and issubclass(obj, (TaskModel, Transformer)) and obj is not TaskModel
            and obj.__module__ == module.__name__}


def class_named(name: str, given: type | None = None) -> type:
    """The class a config.json names: minilm's own by name, or `given` (checked to be the one named)."""
    if given is not None:
        if _class_name(given) != name and given.__name__ != name:
            raise CheckpointError(f"config.json model_class={name!r} does not match the class passed in "
                                  f"({_class_name(given)})")
        return given
    known = _model_classes()
    if name not in known:
        raise CheckpointError(f"config.json model_class={name!r} is not one of minilm's model classes "
                              f"({', '.join(sorted(known))}); a checkpoint never makes minilm import a module: "
                              f"for a class of your own, pass it as load_model(..., model_class=YourClass)")
    return known[name]


def model_config(settings, where) -> ModelConfig:
    """The ModelConfig a config.json (or finetune.json) records; a hand-edited one is one CheckpointError."""
    if not isinstance(settings, dict):
        raise CheckpointError(f"{where}: model_config is {json.dumps(settings)}, not the model's settings (a dict of "
                              f"ModelConfig fields): the file was edited or truncated")
    try:
        return ModelConfig.from_dict(settings)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: model_config is invalid: {e}") from None


def build(meta: dict, where, given: type | None = None) -> torch.nn.Module:
    """A fresh model from a config.json's (or finetune.json's) model_class, model_config and model_kwargs.

    Whatever a hand edit made of them is refused in one CheckpointError naming the entry.
    """
    cls = class_named(meta["model_class"], given)
    config, kwargs = model_config(meta["model_config"], where), meta.get("model_kwargs", {})
    takes = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "config")]
    if not isinstance(kwargs, dict) or set(kwargs) - set(takes):
        extra = sorted(set(kwargs) - set(takes)) if isinstance(kwargs, dict) else kwargs
        raise CheckpointError(f"{where}: model_kwargs {extra} are not arguments of {cls.__name__} (it takes "
                              f"{', '.join(takes) or 'none besides its config'})")
    try:
        return cls(config, **kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {cls.__name__} cannot be built from model_kwargs {kwargs}: {e}") from None


def constructor_kwargs(model: torch.nn.Module) -> dict:
    """Constructor arguments other than `config`, read from the attributes of the same name."""
    kwargs = {}
    for name, p in inspect.signature(type(model).__init__).parameters.items():
        if name in ("self", "config") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if hasattr(model, name):
            kwargs[name] = getattr(model, name)
        elif p.default is p.empty:
            raise CheckpointError(f"{type(model).__name__} needs constructor argument {name!r} but has no "
                                  f"attribute {name!r} to save it from")
    return kwargs


def _unique_state(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict with tied tensors kept once, and {alias: kept name} for the rest."""
    kept, aliases, seen = {}, {}, {}
    for name, t in model.state_dict().items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if t.numel() and key in seen:
            aliases[name] = seen[key]
        else:
            seen[key] = name
            kept[name] = t.detach().contiguous().cpu()
    return kept, aliases


def _complete(folder: Path) -> bool:
    try:
        read_config(folder)
        return True
    except CheckpointError:
        return False


def recover(final, *, cleanup: bool = False) -> None:
    """Finish or undo a replacement of the checkpoint folder `final` that a crash interrupted
    (`atomic.recover_folder`: a new folder counts as complete when its config.json checks out)."""
    recover_folder(final, complete=_complete, cleanup=cleanup)


def save_checkpoint(directory, model: torch.nn.Module, tokenizer=None, *, trainer_state: dict | None = None,
                    **extra) -> Path:
    """Write `model` (and `tokenizer`, `trainer_state`) to `directory` atomically; returns the path.

    `extra` is JSON-serialisable metadata (step, metrics, the command that made it) stored in
    config.json under "extra". Wrappers (DDP, torch.compile) are unwrapped first.
    """
    final = Path(directory)
    writing = final  # what is being written, for the message when the disk is full
    try:
        with atomic_folder(final) as tmp:  # on any error the temporary folder goes, `final` is untouched
            model = unwrap(model)
            tensors, aliases = _unique_state(model)
            writing = final / WEIGHTS
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
            if tokenizer is not None:
                writing = final / TOKENIZER
                tokenizer.save(tmp / TOKENIZER)
            if trainer_state is not None:
                writing = final / TRAINER_STATE
                torch.save(trainer_state, tmp / TRAINER_STATE)
            writing = final / CONFIG
            files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
            config = getattr(model, "config", None)
            meta = {
                "model_class": _class_name(type(model)),
                "model_config": config.to_dict() if hasattr(config, "to_dict") else None,
                "model_kwargs": constructor_kwargs(model),
                "tied": aliases,
                "files": files,
                "extra": extra,
            }
            (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    except (OSError, SafetensorError, RuntimeError) as e:  # a full disk, a quota: torch says "unexpected pos"
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        raise CheckpointError(f"could not write {writing} ({reason}; is the disk full?): nothing was saved; the "
                              f"checkpoints already in {final.parent} are intact") from e
    return final


def read_config(directory) -> dict:
    """config.json of a checkpoint, after checking that every file it lists is present and intact."""
    directory = Path(directory)
    path = directory / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a minilm checkpoint: {CONFIG} is missing")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e})") from None
    for key in ("model_class", "model_config", "files"):
        if key not in meta:
            raise CheckpointError(f"{path} has no {key!r} entry: not a minilm checkpoint (or truncated)")
    for name, digest in meta["files"].items():
        f = directory / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
        if sha256_file(f) != digest:
            raise CheckpointError(f"checkpoint file {f} is corrupt or truncated: its sha256 does not match the "
                                  f"one recorded in {CONFIG} ({f.stat().st_size} bytes on disk)")
    return meta


def load_weights(directory, model: torch.nn.Module, *, meta: dict | None = None) -> None:
    """Load a checkpoint's weights into an existing `model`, refusing any mismatch by name."""
    directory = Path(directory)
    meta = read_config(directory) if meta is None else meta
    model = unwrap(model)
    config = getattr(model, "config", None)
    if meta["model_config"] is not None and hasattr(config, "to_dict"):
        diff = {k: (v, config.to_dict().get(k)) for k, v in meta["model_config"].items()
                if config.to_dict().get(k) != v and k not in ("dropout", "attention_dropout", "attention_backend")}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(f"checkpoint {directory} does not match the model's config ({detail})")
    try:
        tensors = load_file(str(directory / WEIGHTS), device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint file {directory / WEIGHTS} is corrupt or truncated ({e})") from None
    expected, aliases = _unique_state(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected) - set(aliases))
    shapes = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shape mismatch {shapes}" if shapes else ""]
        raise CheckpointError(f"checkpoint {directory} does not fit {type(model).__name__}: "
                              + "; ".join(p for p in parts if p))
    with torch.no_grad():
        state = model.state_dict()
        for k, v in tensors.items():
            state[aliases.get(k, k)].copy_(v)


def load_model(directory, *, device: str | torch.device = "cpu", model_class: type | None = None):
    """Rebuild the model saved in `directory` and its tokenizer -> (model, tokenizer or None).

    `model_class` is needed only for a class outside minilm.nn.model (its name must match the file's).
    """
    directory = Path(directory)
    meta = read_config(directory)
    model = build(meta, directory / CONFIG, model_class).to(device)
    load_weights(directory, model, meta=meta)
    tokenizer = None
    if (directory / TOKENIZER).is_file():
        tokenizer = Tokenizer.load(directory / TOKENIZER)
    return model, tokenizer


def load_trainer_state(directory) -> dict:
    """The optimiser/scheduler/RNG/step state of a resumable checkpoint (integrity-checked)."""
    directory = Path(directory)
    meta = read_config(directory)
    if TRAINER_STATE not in meta["files"]:
        raise CheckpointError(f"checkpoint {directory} has no {TRAINER_STATE}: it holds weights only and "
                              f"cannot be resumed from")
    try:
        return torch.load(directory / TRAINER_STATE, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # never pass on torch's advice to retry with weights_only=False
        raise CheckpointError(f"{directory / TRAINER_STATE}: refused: it holds Python objects besides the trainer's "
                              f"tensors and numbers, which could run code when loaded; it was not written by "
                              f"minilm") from None
