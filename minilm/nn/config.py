"""Model configuration: one dataclass every module receives, and named presets.

Design choices:
- One flat dataclass, as in nanoGPT: every module reads the fields it needs.
- Presets carry the *published* shapes (BERT's miniature family, GPT-2 small) plus
  two small GPTs for the CPU. The vocabulary is whatever the tokenizer says, so
  callers usually override `vocab_size` (e.g. `ModelConfig.preset("bert-mini", vocab_size=8192)`).
- Invalid values fail here, at construction, with the field, the value and what is accepted.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

NORMS = ("pre", "post")
ACTIVATIONS = ("gelu", "gelu_tanh")
POSITIONS = ("learned", "rope")
ATTENTION_BACKENDS = ("auto", "reference", "sdpa", "triton")


@dataclass
class ModelConfig:
    vocab_size: int = 8192
    max_seq_len: int = 512  # number of learned positions (context length)
    d_model: int = 256  # width of the residual stream
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 1024  # width of the feed-forward hidden layer
    dropout: float = 0.1  # on embeddings, attention output and feed-forward output
    attention_dropout: float = 0.1  # on the attention probabilities
    norm: str = "post"  # "post": BERT (norm after each residual add); "pre": GPT-2 (norm before each sublayer)
    activation: str = "gelu"  # "gelu" (exact erf, BERT) or "gelu_tanh" (GPT-2's approximation)
    type_vocab_size: int = 2  # segment (token-type) embeddings; 0 switches them off (GPT-2)
    tie_embeddings: bool = True  # output projection shares the token-embedding matrix
    # "learned": a table of absolute position vectors added to the embeddings (BERT, GPT-2);
    # "rope": rotary embeddings (RoFormer) turn q and k by angles set by their positions, so
    # attention scores depend on relative distance from the first step, with no table to learn.
    position: str = "learned"
    norm_eps: float = 1e-12
    attention_backend: str = "auto"

    def __post_init__(self):
        def need(ok: bool, field: str, accepted: str):
            if not ok:
                raise ValueError(f"ModelConfig.{field}={getattr(self, field)!r} is invalid: expected {accepted}")

        for field in ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, field)
            need(isinstance(value, int) and not isinstance(value, bool) and value > 0, field, "a positive integer")
        need(self.d_model % self.n_heads == 0, "n_heads", f"a divisor of d_model={self.d_model}")
        for field in ("dropout", "attention_dropout"):
            need(0.0 <= getattr(self, field) < 1.0, field, "a probability in [0, 1)")
        need(self.norm in NORMS, "norm", f"one of {NORMS}")
        need(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}")
        need(self.position in POSITIONS, "position", f"one of {POSITIONS}")
        need(self.position != "rope" or self.head_dim % 2 == 0, "position", "'learned' when d_model / n_heads is odd")
        need(isinstance(self.type_vocab_size, int) and self.type_vocab_size >= 0, "type_vocab_size", "an integer >= 0")
        need(self.norm_eps > 0, "norm_eps", "a positive float")
        need(self.attention_backend in ATTENTION_BACKENDS, "attention_backend", f"one of {ATTENTION_BACKENDS}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """A named preset, with any field overridden: `ModelConfig.preset("bert-mini", vocab_size=8192)`."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)} in overrides for preset {name!r}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {sorted(unknown)}; known fields: {sorted(known)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _bert(n_layers: int, d_model: int) -> dict:
    # BERT's published miniatures (Turc et al. 2019): heads = width / 64, feed-forward = 4 x width.
    return dict(vocab_size=30522, max_seq_len=512, d_model=d_model, n_layers=n_layers, n_heads=d_model // 64,
                d_ff=4 * d_model, dropout=0.1, attention_dropout=0.1, norm="post", activation="gelu",
                type_vocab_size=2, tie_embeddings=True, norm_eps=1e-12)


def _gpt(n_layers: int, d_model: int, n_heads: int, max_seq_len: int, vocab_size: int = 50257) -> dict:
    return dict(vocab_size=vocab_size, max_seq_len=max_seq_len, d_model=d_model, n_layers=n_layers,
                n_heads=n_heads, d_ff=4 * d_model, dropout=0.1, attention_dropout=0.1, norm="pre",
                activation="gelu_tanh", type_vocab_size=0, tie_embeddings=True, norm_eps=1e-5)


# The shared pretrained encoder committed with the package (lessons 05-09 fine-tune it).
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "assets" / "pretrained"

PRESETS: dict[str, dict] = {
    "bert-tiny": _bert(2, 128),
    "bert-mini": _bert(4, 256),
    "bert-small": _bert(4, 512),
    "bert-medium": _bert(8, 512),
    "bert-base": _bert(12, 768),
    "gpt2": _gpt(12, 768, 12, 1024),
    # Small decoders that train in minutes on a laptop CPU.
    "gpt-micro": _gpt(2, 128, 2, 256, vocab_size=8192),
    "gpt-mini": _gpt(4, 256, 4, 256, vocab_size=8192),
}
