"""Weight import/export between minilm models and the Hugging Face checkpoint layouts.

    from_hf(MaskedLM, "path/to/bert")   ->  a MaskedLM holding those weights
    to_hf(model)                        ->  a state dict under HF's names

Layouts: BERT (`BertForMaskedLM`, `BertForSequenceClassification`,
`BertForTokenClassification`, and `BertModel` for a bare encoder `Transformer`) and GPT-2
(`GPT2LMHeadModel`) for `CausalLM`.

Design choices:
- One table per layout lists, for every minilm parameter, the HF name it lives under and
  how it is stored there. Import and export both read that table, so they cannot disagree.
- GPT-2 stores its projections as `Conv1D` weights, (in, out): the transpose of
  `nn.Linear`'s (out, in). It also fuses q, k and v into one `c_attn`; we keep them
  separate (LoRA targets them by name), so each is a third of c_attn's output columns.
- Strict: a missing or unexpected key, or a shape mismatch, raises an error listing them.
  The only keys skipped are buffers old checkpoints saved (position ids, GPT-2's causal
  mask), and — for a masked LM — the pooler and next-sentence head of BertForPreTraining,
  the form the original BERT weights are published in. A tied output weight may be absent
  (`save_pretrained` drops it); it is the token embedding then.
- No model library is imported: HF checkpoints are just tensors with names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from minilm.config import ModelConfig


@dataclass(frozen=True)
class Entry:
    ours: str  # minilm state-dict key
    hf: str  # HF state-dict key
    transpose: bool = False  # stored as Conv1D (in, out)
    part: int | None = None  # which third of a fused q|k|v tensor (GPT-2's c_attn)


# Keys that carry no weights we model (buffers saved by older transformers versions).
IGNORED_SUFFIXES = ("embeddings.position_ids", ".attn.bias", ".attn.masked_bias")
# BertForPreTraining's extra parts: a masked LM does not use them.
PRETRAINING_PREFIXES = ("bert.pooler.", "cls.seq_relationship.")


def bert_body_entries(config: ModelConfig, prefix: str) -> list[Entry]:
    """Our encoder body under BertModel's names (`prefix` = "bert." inside the task models)."""
    e = [Entry("body.embeddings.tok.weight", f"{prefix}embeddings.word_embeddings.weight"),
         Entry("body.embeddings.pos.weight", f"{prefix}embeddings.position_embeddings.weight")]
    if config.type_vocab_size:
        e.append(Entry("body.embeddings.seg.weight", f"{prefix}embeddings.token_type_embeddings.weight"))
    e += _pairs("body.embeddings.norm", f"{prefix}embeddings.LayerNorm")
    for i in range(config.n_layers):
        ours, hf = f"body.blocks.{i}.", f"{prefix}encoder.layer.{i}."
        for name, hf_name in [("attn.q", "attention.self.query"), ("attn.k", "attention.self.key"),
                              ("attn.v", "attention.self.value"), ("attn.o", "attention.output.dense"),
                              ("attn_norm", "attention.output.LayerNorm"), ("ff.up", "intermediate.dense"),
                              ("ff.down", "output.dense"), ("ff_norm", "output.LayerNorm")]:
            e += _pairs(ours + name, hf + hf_name)
    return e


def gpt2_entries(config: ModelConfig) -> list[Entry]:
    """CausalLM under GPT2LMHeadModel's names."""
    e = [Entry("body.embeddings.tok.weight", "transformer.wte.weight"),
         Entry("body.embeddings.pos.weight", "transformer.wpe.weight")]
    for i in range(config.n_layers):
        ours, hf = f"body.blocks.{i}.", f"transformer.h.{i}."
        e += _pairs(ours + "attn_norm", hf + "ln_1") + _pairs(ours + "ff_norm", hf + "ln_2")
        for part, name in enumerate("qkv"):
            e += [Entry(f"{ours}attn.{name}.weight", hf + "attn.c_attn.weight", transpose=True, part=part),
                  Entry(f"{ours}attn.{name}.bias", hf + "attn.c_attn.bias", part=part)]
        for name, hf_name in [("attn.o", "attn.c_proj"), ("ff.up", "mlp.c_fc"), ("ff.down", "mlp.c_proj")]:
            e += [Entry(f"{ours}{name}.weight", f"{hf}{hf_name}.weight", transpose=True),
                  Entry(f"{ours}{name}.bias", f"{hf}{hf_name}.bias")]
    return e + _pairs("body.final_norm", "transformer.ln_f") + [Entry("lm_head.weight", "lm_head.weight")]


def _pairs(ours: str, hf: str) -> list[Entry]:
    return [Entry(f"{ours}.weight", f"{hf}.weight"), Entry(f"{ours}.bias", f"{hf}.bias")]


def layout(model: torch.nn.Module) -> tuple[list[Entry], dict[str, str]]:
    """The entries for this model's class, and the aliases: extra HF keys that are copies of another."""
    from minilm.model import CausalLM, MaskedLM, SequenceClassifier, TokenClassifier, Transformer

    config = model.config
    if config.position != "learned":
        raise ValueError(f"ModelConfig.position={config.position!r} has no Hugging Face BERT/GPT-2 layout "
                         "(both use a learned position table)")
    if isinstance(model, CausalLM):
        return gpt2_entries(config), {}
    if isinstance(model, Transformer):  # a bare encoder: BertModel without its pooler
        return [Entry(e.ours.removeprefix("body."), e.hf) for e in bert_body_entries(config, prefix="")], {}
    entries = bert_body_entries(config, prefix="bert.")
    if isinstance(model, MaskedLM):
        head = "cls.predictions."
        entries += _pairs("head.dense", head + "transform.dense") + _pairs("head.norm", head + "transform.LayerNorm")
        entries += [Entry("head.decoder.weight", head + "decoder.weight"), Entry("head.decoder.bias", head + "bias")]
        return entries, {head + "decoder.bias": head + "bias"}  # HF ties the decoder's bias to `bias`
    if isinstance(model, SequenceClassifier):
        entries += _pairs("pooler", "bert.pooler.dense")
    if isinstance(model, (SequenceClassifier, TokenClassifier)):
        return entries + _pairs("classifier", "classifier"), {}
    raise TypeError(f"no Hugging Face layout for {type(model).__name__}")


def tied_keys(model) -> dict[str, str]:
    """Ours output weight -> the HF key of the token embedding it is tied to (may stand in when absent)."""
    from minilm.model import CausalLM, MaskedLM

    if not model.config.tie_embeddings:
        return {}
    if isinstance(model, CausalLM):
        return {"lm_head.weight": "transformer.wte.weight"}
    if isinstance(model, MaskedLM):
        return {"head.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    return {}


# ----------------------------------------------------------------------------------------------
# Export


def to_hf(model) -> dict[str, Tensor]:
    """Our weights as a state dict with HF's names and layouts (fused/transposed where HF does)."""
    ours = model.state_dict()
    entries, aliases = layout(model)
    grouped: dict[str, list[Entry]] = {}
    for entry in entries:
        grouped.setdefault(entry.hf, []).append(entry)
    out = {}
    for hf_key, group in grouped.items():
        group.sort(key=lambda e: e.part or 0)
        tensor = torch.cat([ours[e.ours] for e in group], dim=0) if group[0].part is not None else ours[group[0].ours]
        out[hf_key] = tensor.t().contiguous() if group[0].transpose else tensor.detach().clone()
    for alias, source in aliases.items():
        out[alias] = out[source]
    return out


# ----------------------------------------------------------------------------------------------
# Import


def read_state_dict(source) -> tuple[dict[str, Tensor], dict | None]:
    """(state dict, HF config.json as a dict or None) from a dict, a weights file or a folder."""
    if isinstance(source, dict):
        return dict(source), None
    path = Path(source)
    hf_config = None
    if path.is_dir():
        if (path / "config.json").exists():
            hf_config = json.loads((path / "config.json").read_text())
        candidates = [path / n for n in ("model.safetensors", "pytorch_model.bin", "model.pt")]
        found = [p for p in candidates if p.exists()]
        if not found:
            raise FileNotFoundError(f"no weights in {path}: expected one of {[p.name for p in candidates]}")
        path = found[0]
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path)), hf_config
    return torch.load(path, map_location="cpu", weights_only=True), hf_config


def config_from_hf(hf_config: dict) -> ModelConfig:
    """Translate a HF BertConfig / GPT2Config dict (config.json) into a ModelConfig."""
    if hf_config.get("model_type") == "gpt2" or "n_embd" in hf_config:
        d = hf_config["n_embd"]
        return ModelConfig(vocab_size=hf_config["vocab_size"], max_seq_len=hf_config["n_positions"], d_model=d,
                           n_layers=hf_config["n_layer"], n_heads=hf_config["n_head"],
                           d_ff=hf_config.get("n_inner") or 4 * d, dropout=hf_config.get("resid_pdrop", 0.1),
                           attention_dropout=hf_config.get("attn_pdrop", 0.1), norm="pre",
                           activation=_activation(hf_config.get("activation_function", "gelu_new")),
                           type_vocab_size=0, tie_embeddings=hf_config.get("tie_word_embeddings", True),
                           norm_eps=hf_config.get("layer_norm_epsilon", 1e-5))
    return ModelConfig(vocab_size=hf_config["vocab_size"], max_seq_len=hf_config["max_position_embeddings"],
                       d_model=hf_config["hidden_size"], n_layers=hf_config["num_hidden_layers"],
                       n_heads=hf_config["num_attention_heads"], d_ff=hf_config["intermediate_size"],
                       dropout=hf_config.get("hidden_dropout_prob", 0.1),
                       attention_dropout=hf_config.get("attention_probs_dropout_prob", 0.1), norm="post",
                       activation=_activation(hf_config.get("hidden_act", "gelu")),
                       type_vocab_size=hf_config.get("type_vocab_size", 2),
                       tie_embeddings=hf_config.get("tie_word_embeddings", True),
                       norm_eps=hf_config.get("layer_norm_eps", 1e-12))


def _activation(name: str) -> str:
    accepted = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
    if name not in accepted:
        raise ValueError(f"activation {name!r} in the HF config is not supported: expected one of {sorted(accepted)}")
    return accepted[name]


def config_from_shapes(sd: dict[str, Tensor], gpt2: bool) -> ModelConfig:
    """Guess the config from tensor shapes, assuming 64-wide heads (true of BERT and GPT-2 checkpoints)."""
    def key(suffix):
        found = [k for k in sd if k.endswith(suffix)]
        if not found:
            raise ValueError(f"cannot infer the config: no key ending in {suffix!r}; pass config=ModelConfig(...)")
        return sd[found[0]]

    if gpt2:
        vocab, d = key("wte.weight").shape
        n_layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.h."))
        return ModelConfig.preset("gpt2", vocab_size=vocab, max_seq_len=key("wpe.weight").shape[0], d_model=d,
                                  n_layers=n_layers, n_heads=max(d // 64, 1), d_ff=key("mlp.c_fc.weight").shape[1])
    vocab, d = key("word_embeddings.weight").shape
    n_layers = 1 + max(int(k.split("encoder.layer.")[1].split(".")[0]) for k in sd if "encoder.layer." in k)
    types = [v.shape[0] for k, v in sd.items() if k.endswith("token_type_embeddings.weight")]
    return ModelConfig.preset("bert-base", vocab_size=vocab, max_seq_len=key("position_embeddings.weight").shape[0],
                              d_model=d, n_layers=n_layers, n_heads=max(d // 64, 1),
                              d_ff=key("intermediate.dense.weight").shape[0], type_vocab_size=types[0] if types else 0)


def from_hf(cls, source, config: ModelConfig | None = None):
    """Build a `cls` model (MaskedLM, CausalLM, SequenceClassifier, TokenClassifier) from HF weights."""
    from minilm.model import CausalLM, SequenceClassifier, TokenClassifier

    sd, hf_config = read_state_dict(source)
    sd = {k: v for k, v in sd.items() if not k.endswith(IGNORED_SUFFIXES)}
    if config is None:
        config = config_from_hf(hf_config) if hf_config else config_from_shapes(sd, gpt2=cls is CausalLM)
    if cls in (SequenceClassifier, TokenClassifier):
        if "classifier.weight" not in sd:
            raise KeyError(f"{cls.__name__}.from_hf: missing key 'classifier.weight' (the task head); "
                           f"keys present start with {sorted({k.split('.')[0] for k in sd})}")
        model = cls(config, num_labels=sd["classifier.weight"].shape[0])
    else:
        model = cls(config)
    load_hf_state_dict(model, sd)
    return model


def load_hf_state_dict(model, sd: dict[str, Tensor]) -> None:
    """Copy HF-named tensors into `model`, checking that every key is used and every shape fits."""
    from minilm.model import MaskedLM

    entries, aliases = layout(model)
    tied = tied_keys(model)
    ours = model.state_dict()
    needed = {e.hf for e in entries}
    tied_hf = {e.hf: tied[e.ours] for e in entries if e.ours in tied}  # HF output key -> HF embedding key
    missing = sorted(k for k in needed if k not in sd and k not in tied_hf)
    skipped = set(aliases)
    if isinstance(model, MaskedLM):
        skipped |= {k for k in sd if k.startswith(PRETRAINING_PREFIXES)}
    unexpected = sorted(k for k in sd if k not in needed and k not in skipped)
    if missing or unexpected:
        raise KeyError(f"{type(model).__name__}.from_hf: checkpoint does not match the "
                       f"{'GPT-2' if 'lm_head.weight' in needed else 'BERT'} layout.\n"
                       f"  missing keys ({len(missing)}): {missing}\n  unexpected keys ({len(unexpected)}): {unexpected}")
    new, mismatched = {}, []
    for e in entries:
        tensor = sd[e.hf] if e.hf in sd else sd[tied_hf[e.hf]]
        if e.transpose:
            tensor = tensor.t()
        if e.part is not None:
            if tensor.shape[0] % 3:
                mismatched.append(f"{e.hf}: {tuple(tensor.shape)} does not split into q, k, v")
                continue
            tensor = tensor.chunk(3, dim=0)[e.part]
        if tensor.shape != ours[e.ours].shape:
            mismatched.append(f"{e.hf} {tuple(tensor.shape)} -> {e.ours} {tuple(ours[e.ours].shape)}")
        new[e.ours] = tensor
    if mismatched:
        raise ValueError(f"{type(model).__name__}.from_hf: shape mismatch (checkpoint -> model config):\n  "
                         + "\n  ".join(mismatched))
    # A tied output weight is the embedding: take it from the embedding so the two stay one tensor.
    for out_key in tied:
        new[out_key] = new["body.embeddings.tok.weight"]
    model.load_state_dict(new, strict=True)
