"""From a name to a model: every source a command or lesson accepts, told apart once, loaded for the class asked.

    source = resolve("runs/pretrain")                  # what it is, decided here and only here
    model, tokenizer = load(source, MaskedLM)           # built for the class the caller needs

The sources, in the order `resolve` tells them apart:

    scratch      "scratch" or a preset name ("bert-mini"): random weights; the shape is the
                 preset's, or `arch`'s (any source below) for "scratch"
    finetuned    a `minilm finetune` run folder (it holds finetune.json)
    huggingface  a folder holding a Hugging Face config.json ("model_type") and weights
    checkpoint   a minilm checkpoint folder, or a run folder: its final/, else best/, else
                 the latest step (said in one line; `run_folder.resolve`)

Design choices:
- One decision, one place: a command resolves its argument once and hands the `ModelSource`
  on; nothing downstream asks again whether a folder is a Hugging Face one.
- A source gives the class asked for when what it holds is that class or contains it: the
  body (`Transformer`) of any model with one; a masked-LM head on a headless BERT only for
  training (`fresh_head=True`, said in one line), never for `fill-mask`, which would print
  noise. Anything else is refused in one line naming what the source holds and what was
  wanted.
- The fine-tuned run's format (finetune.json: a full checkpoint, or an adapter on a base
  source checked by sha256) is read here, in the lowest room that loads models, so
  pretraining, fine-tuning, the commands and the lessons accept the same sources;
  `minilm.downstream.finetuning` writes it.
- `checkpoint.load_model` and `hf.load_pretrained` stay the readers of their on-disk formats;
  this module only chooses between them and adapts the result.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path


from minilm.data.tokenizer import Tokenizer
from minilm.nn import hf, peft
from minilm.nn.config import PRESETS, ModelConfig
from minilm.nn.model import MaskedLM, Transformer
from minilm.store.fetch import sha256_file
from minilm.train import checkpoint as ckpt
from minilm.train import run_folder

KINDS = ("scratch", "finetuned", "huggingface", "checkpoint")
DESCRIBE = {"scratch": "a preset (random weights)", "finetuned": "a fine-tuned run (finetune.json)",
            "huggingface": "a Hugging Face folder", "checkpoint": "a checkpoint or run folder"}
SCRATCH = "scratch"
# A fine-tuned run folder (written by minilm.downstream.finetuning):
RUN_INFO = "finetune.json"  # what `minilm evaluate` needs to rebuild the model
ADAPTER = "adapter.safetensors"  # the trained tensors of a parameter-efficient method, head included
MODEL_DIR = "model"  # the checkpoint of a full fine-tuning
BASE_DIR = "base"  # a random base (from scratch) kept for the adapter, which cannot be fetched again


@dataclass(frozen=True)
class ModelSource:
    """What a name turned out to be. `path` is the folder read (a run folder's final/ already chosen)."""

    kind: str  # one of KINDS
    name: str  # as given, for messages
    flag: str = "--init"  # the option it came from, for messages
    path: Path | None = None
    preset: str | None = None  # scratch: the preset shape (None: `arch`'s)
    arch: "ModelSource | None" = None  # scratch without a preset: the source whose shape and tokenizer to copy

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else self.name


def resolve(name, *, flag: str = "--init", arch=None, accept: tuple[str, ...] = KINDS) -> ModelSource:
    """Decide once what `name` is (see the module docstring); `arch` gives "scratch" its shape.

    `accept` lists the kinds the caller can use: any other is refused in one line naming both.
    """
    source = _decide(str(name), flag, arch)
    if source.kind not in accept:
        raise run_folder.RunFolderError(f"{flag} {name} is {DESCRIBE[source.kind]}; this command reads "
                                        + " or ".join(DESCRIBE[k] for k in accept))
    return source


def _decide(name: str, flag: str, arch) -> ModelSource:
    if name == SCRATCH or (name in PRESETS and not Path(name).is_dir()):
        preset = name if name != SCRATCH else None
        shape = None
        if preset is None:
            arch = str(arch) if arch is not None else "bert-mini"
            if arch in PRESETS and not Path(arch).is_dir():
                preset = arch
            else:
                shape = resolve(arch, flag="--arch")
                if shape.kind == "scratch":
                    shape = None
        return ModelSource("scratch", name, flag, preset=preset, arch=shape)
    path = Path(name)
    ckpt.recover(path)  # a replacement a crash interrupted: the old folder or the new one
    if not path.exists():
        raise run_folder.RunFolderError(f"{flag} {name}: no such folder (nor '{SCRATCH}' or a preset: "
                                        f"{', '.join(sorted(PRESETS))})")
    if (path / RUN_INFO).is_file():
        return ModelSource("finetuned", name, flag, path=path)
    if hf.is_hf_folder(path):
        return ModelSource("huggingface", name, flag, path=path)
    return ModelSource("checkpoint", name, flag, path=run_folder.resolve(path, flag=flag))


# ---------------------------------------------------------------- loading


def load(source: ModelSource, want: type, *, device="cpu", tokenizer=None, dropout: float | None = None,
         fresh_head: bool = False, config: dict | None = None, hint: str = "", **kwargs):
    """(model of class `want`, tokenizer) from `source`, on `device`.

    tokenizer: overrides the source's (scratch from a preset needs one: it sets the vocabulary).
    dropout: set on the loaded model's config (training), else the saved value is kept.
    fresh_head: a masked LM asked of a headless BERT gets a new head instead of a refusal.
    config: scratch only, ModelConfig fields over the preset's (e.g. max_seq_len, position).
    kwargs go to the constructor of a model built here (num_labels=, special_ids=).
    """
    if source.kind == "scratch":  # built with the dropout asked for, not rebuilt for it below
        shape = {**({} if dropout is None else {"dropout": dropout, "attention_dropout": dropout}), **(config or {})}
        model, tokenizer = _scratch(source, want, tokenizer, shape, kwargs)
    elif source.kind == "finetuned":
        model, tokenizer = _from_finetuned(source, want, hint)
    elif source.kind == "huggingface":
        model, tokenizer = _from_hf(source, want, fresh_head, hint, kwargs)
    else:
        model, tok = ckpt.load_model(source.path)
        model, tokenizer = _adapt(model, want, source, hint), tokenizer or tok
    if tokenizer is None:
        raise run_folder.RunFolderError(f"{source.flag} {source} has no {ckpt.TOKENIZER}: the command needs one to "
                                        f"encode text")
    if dropout is not None and (model.config.dropout, model.config.attention_dropout) != (dropout, dropout):
        model = _with_dropout(model, dropout)
    return model.to(device), tokenizer


def config_of(source: ModelSource) -> ModelConfig | None:
    """The shape a source holds, without loading its weights (None for a preset: the caller completes it)."""
    if source.kind == "scratch":
        return None if source.arch is None else config_of(source.arch)
    if source.kind == "finetuned":
        info = read_run_info(source.path)
        if "model" in info:
            where = source.path / info["model"] / ckpt.CONFIG
            return ckpt.model_config(ckpt.read_config(where.parent)["model_config"], where)
        return ckpt.model_config(info["model_config"], source.path / RUN_INFO)
    if source.kind == "huggingface":
        return hf.config_from_hf(json.loads((source.path / "config.json").read_text()), str(source.path))
    return ckpt.model_config(ckpt.read_config(source.path)["model_config"], source.path / ckpt.CONFIG)


def weights_digest(source: ModelSource) -> str:
    """The sha256 of a source's weights: recorded by a minilm checkpoint (and checked on read),
    hashed here for a Hugging Face folder. An adapter names its base by this."""
    if source.kind == "huggingface":
        return sha256_file(next(source.path / n for n in hf.WEIGHT_FILES if (source.path / n).is_file()))
    if source.kind == "checkpoint":
        return ckpt.read_config(source.path)["files"][ckpt.WEIGHTS]  # read_config checks every file's integrity
    raise ValueError(f"{source.flag} {source}: a {source.kind} source cannot be an adapter's base")


def _scratch(source, want, tokenizer, overrides: dict, kwargs):
    if source.arch is not None:
        config = dataclasses.replace(config_of(source.arch), **overrides)
        tokenizer = tokenizer or tokenizer_of(source.arch)
    else:
        if tokenizer is None:
            raise ValueError(f"{source.flag} {source.name}: a preset has no tokenizer; pass the one to train with")
        config = ModelConfig.preset(source.preset, vocab_size=tokenizer.vocab_size, **overrides)
    where = f"{source.arch.flag} {source.arch}" if source.arch else f"{source.flag} {source.name}"
    check_tokenizer(tokenizer, config, where)
    return want(config, **kwargs), tokenizer


def tokenizer_of(source: ModelSource):
    """The tokenizer a folder source was saved with (without loading its weights)."""
    if source.kind == "huggingface":
        return Tokenizer.from_hf(source.path)
    if source.kind == "finetuned":
        info = read_run_info(source.path)
        return load_tokenizer(source.path / info.get("model", "."))
    if source.kind == "checkpoint":
        return load_tokenizer(source.path)
    raise ValueError(f"{source.flag} {source.name}: a preset has no tokenizer")


def _adapt(model, want: type, source: ModelSource, hint: str):
    """`model` as a `want`: itself, or its body when a bare Transformer is wanted; else a one-line refusal."""
    if isinstance(model, want):
        return model
    if want is Transformer and isinstance(getattr(model, "body", None), Transformer):
        return model.body
    raise run_folder.RunFolderError(f"{source.flag} {source} holds {_a(type(model))}, not {_a(want)}{hint}")


def _a(cls: type) -> str:
    return ("an " if cls.__name__[0] in "AEIOU" else "a ") + cls.__name__


def _from_hf(source, want: type, fresh_head: bool, hint: str, kwargs):
    family = json.loads((source.path / "config.json").read_text()).get("model_type")
    families = {hf.ARCHITECTURES[n].family for n in getattr(want, "hf_architectures", ())}
    if family not in families:
        holds = {"bert": "a BERT-family encoder", "gpt2": "a GPT-2 decoder"}.get(family, f"model_type {family!r}")
        raise run_folder.RunFolderError(f"{source.flag} {source} is a Hugging Face folder of {holds}, not "
                                        f"{_a(want)}{hint}")
    if want is MaskedLM and fresh_head and not _has_mlm_head(source.path):
        body, tokenizer = hf.load_pretrained(source.path, Transformer)
        model = MaskedLM(body.config)
        model.body.load_state_dict(body.state_dict())
        print(f"minilm: {source.path} has no masked-LM head: a fresh one is initialised (pretraining trains it)",
              file=sys.stderr)
        return model, tokenizer
    return hf.load_pretrained(source.path, want, **kwargs)


def _has_mlm_head(folder: Path) -> bool:
    state, _, _ = hf.read_state_dict(folder)
    return any(k.startswith("cls.predictions.") for k in state)


# ---------------------------------------------------------------- fine-tuned runs


def read_run_info(run_dir: Path) -> dict:
    """finetune.json of a fine-tuned run, after checking the files it lists by sha256."""
    path = run_dir / RUN_INFO
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ckpt.CheckpointError(f"{path} is corrupt or truncated ({e})") from None
    needed = ("task", "data", "method", "label_names", "max_len") + (
        () if isinstance(info, dict) and "model" in info else ("adapter", "base", "base_sha256", "model_class",
                                                               "model_config", "files"))
    missing = [k for k in needed if k not in info] if isinstance(info, dict) else list(needed)
    if missing:
        raise ckpt.CheckpointError(f"{path} lacks {', '.join(missing)}: it is not what minilm finetune wrote (edited "
                                   f"or written over?); fine-tune again to rebuild it")
    for name, digest in info.get("files", {}).items():  # the adapter and its tokenizer, checked like checkpoints
        f = run_dir / name
        if not f.is_file() or sha256_file(f) != digest:
            raise ckpt.CheckpointError(f"{f} is {'missing' if not f.is_file() else 'corrupt or changed'}: its sha256 "
                                       f"does not match the one in {RUN_INFO}; fine-tune again to rebuild it")
    return info


def load_finetuned(source: ModelSource):
    """Rebuild a fine-tuned model from its run folder -> (model in eval mode, tokenizer, info)."""
    if source.kind != "finetuned":
        raise run_folder.RunFolderError(f"{source.name} is not a fine-tuning run folder ({RUN_INFO} is missing): it "
                                        f"is a {source.kind} source")
    run_dir = source.path
    info = read_run_info(run_dir)
    if "model" in info:
        model, tokenizer = ckpt.load_model(run_dir / info["model"])
        return model.eval(), tokenizer, info
    base_dir = run_dir / info["base"]  # an absolute path stays absolute
    if not base_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: the adapter's base checkpoint {base_dir} is missing")
    base = resolve(base_dir, flag="base")
    if weights_digest(base) != info["base_sha256"]:
        raise ValueError(f"{run_dir}: the base checkpoint {base_dir} changed since fine-tuning (its weights' sha256 "
                         f"differs); the adapter only fits the weights it was trained on")
    body, _ = load(base, Transformer)
    model = ckpt.build({"model_kwargs": {"num_labels": len(info["label_names"])}, **info}, run_dir / RUN_INFO)
    model.body.load_state_dict(body.state_dict())
    peft.load_adapter(run_dir / info["adapter"], model)
    tokenizer = load_tokenizer(run_dir / ckpt.TOKENIZER)
    check_tokenizer(tokenizer, model.config, str(run_dir))
    return model.eval(), tokenizer, info


def _from_finetuned(source, want: type, hint: str):
    info = read_run_info(source.path)
    if "model" not in info and want is Transformer:
        raise run_folder.RunFolderError(
            f"{source.flag} {source} holds a {info['method']} adapter on {info['base']}, not a plain body to start "
            f"from: start from its base, or from a run fine-tuned with --method full")
    model, tokenizer, _ = load_finetuned(source)
    return _adapt(model.train(), want, source, hint), tokenizer


# ---------------------------------------------------------------- tokenizers


def load_tokenizer(path):
    """A tokenizer from a tokenizer file or from a checkpoint folder's tokenizer.json."""
    path = Path(path)
    if path.is_dir():
        path = path / ckpt.TOKENIZER
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {path} not found: pass a tokenizer.json or a checkpoint folder holding one")
    return Tokenizer.load(path)


def check_tokenizer(tokenizer, config: ModelConfig, where: str) -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding table."""
    if tokenizer.vocab_size != config.vocab_size:
        raise ValueError(f"{where}: the tokenizer has vocab_size={tokenizer.vocab_size} but the model was built for "
                         f"vocab_size={config.vocab_size}; use the tokenizer saved with the checkpoint")
    specials = {"pad_id": tokenizer.pad_id, "cls_id": tokenizer.cls_id, "sep_id": tokenizer.sep_id,
                "mask_id": tokenizer.mask_id, "unk_id": tokenizer.unk_id}
    bad = {k: v for k, v in specials.items() if not 0 <= v < config.vocab_size}
    if bad:
        raise ValueError(f"{where}: tokenizer special ids {bad} are outside the model's vocabulary "
                         f"(0..{config.vocab_size - 1}); this tokenizer does not belong to this model")


def _with_dropout(model, dropout: float):
    """The same weights in a model whose config has `dropout` (dropout modules read it when built)."""
    config = dataclasses.replace(model.config, dropout=dropout, attention_dropout=dropout)
    if isinstance(model, Transformer):
        fresh = Transformer(config, causal=model.causal)
    else:
        fresh = type(model)(config, **ckpt.constructor_kwargs(model))
    fresh.load_state_dict(model.state_dict())
    return fresh.train(model.training)
