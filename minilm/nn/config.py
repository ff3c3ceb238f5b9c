"""Model configuration: one dataclass every module receives, and named presets.

Design choices:
- One flat dataclass, as in nanoGPT: every module reads the fields it needs.
- Presets carry the *published* shapes (BERT's miniature family, GPT-2 small) plus
  two small GPTs and a small Llama-style decoder for the CPU. The vocabulary is whatever
  the tokenizer says, so callers usually override `vocab_size`
  (e.g. `ModelConfig.preset("bert-mini", vocab_size=8192)`).
- The modern decoder block (Llama, Mistral, Qwen) is configuration, not a second model:
  `norm_type="rms"`, `activation="swiglu"`, `bias=False`, `position="rope"` with its pairing
  and base, `n_kv_heads` < `n_heads` (grouped-query attention) and `tie_embeddings=False`.
  Each can be switched on alone, which is how lesson 13 measures them one at a time.
- Invalid values fail here, at construction, with the field, the value and what is accepted.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

NORMS = ("pre", "post")
NORM_TYPES = ("layer", "rms")
ACTIVATIONS = ("gelu", "gelu_tanh", "swiglu")
POSITIONS = ("learned", "rope")
ROPE_PAIRINGS = ("half", "interleaved")
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
    norm: str = "post"  # "post": BERT (norm after each residual add); "pre": GPT-2, Llama (norm before each sublayer)
    norm_type: str = "layer"  # "layer": LayerNorm (BERT, GPT-2); "rms": RMSNorm, no centring and no shift (Llama)
    # "gelu" (exact erf, BERT), "gelu_tanh" (GPT-2's approximation): up, GELU, down;
    # "swiglu" (Llama): down(silu(gate x) * up x), three matrices (size d_ff with `swiglu_hidden`).
    activation: str = "gelu"
    bias: bool = True  # biases in every linear layer of the body and in LayerNorm; False as in Llama
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention): None = n_heads; 1 = multi-query
    type_vocab_size: int = 2  # segment (token-type) embeddings; 0 switches them off (GPT-2)
    tie_embeddings: bool = True  # output projection shares the token-embedding matrix
    # "learned": a table of absolute position vectors added to the embeddings (BERT, GPT-2);
    # "rope": rotary embeddings (RoFormer) turn q and k by angles set by their positions, so
    # attention scores depend on relative distance from the first step, with no table to learn.
    position: str = "learned"
    # Which channels rotate together: "half" pairs (i, i + Dh/2) (Hugging Face's rotate_half, so
    # every HF Llama checkpoint); "interleaved" pairs (2i, 2i + 1) (the RoFormer paper, Meta's code).
    rope_pairing: str = "half"
    rope_theta: float = 10000.0  # the base: pair i turns by position / theta^(2i/Dh)
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
        need(self.n_kv_heads is None or (isinstance(self.n_kv_heads, int) and not isinstance(self.n_kv_heads, bool)
                                         and self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads == 0),
             "n_kv_heads", f"None (= n_heads) or a positive divisor of n_heads={self.n_heads}")
        for field in ("dropout", "attention_dropout"):
            need(0.0 <= getattr(self, field) < 1.0, field, "a probability in [0, 1)")
        need(self.norm in NORMS, "norm", f"one of {NORMS}")
        need(self.norm_type in NORM_TYPES, "norm_type", f"one of {NORM_TYPES}")
        need(self.activation in ACTIVATIONS, "activation", f"one of {ACTIVATIONS}")
        need(isinstance(self.bias, bool), "bias", "True or False")
        need(self.position in POSITIONS, "position", f"one of {POSITIONS}")
        need(self.position != "rope" or self.head_dim % 2 == 0, "position", "'learned' when d_model / n_heads is odd")
        need(self.rope_pairing in ROPE_PAIRINGS, "rope_pairing", f"one of {ROPE_PAIRINGS}")
        need(self.rope_theta > 1, "rope_theta", "a float > 1 (10000 in RoFormer and Llama 2, 500000 in Llama 3)")
        need(isinstance(self.type_vocab_size, int) and self.type_vocab_size >= 0, "type_vocab_size", "an integer >= 0")
        need(self.norm_eps > 0, "norm_eps", "a positive float")
        need(self.attention_backend in ATTENTION_BACKENDS, "attention_backend", f"one of {ATTENTION_BACKENDS}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """How many key/value heads attention has: n_kv_heads, or n_heads when it is None."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

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


def swiglu_hidden(d_model: int, multiple_of: int = 256, multiplier: float | None = None) -> int:
    """Llama's SwiGLU width: 2/3 of 4 * d_model, times `multiplier` if given, rounded up to `multiple_of`.

    SwiGLU has three d_model x d_ff matrices where the GELU MLP has two, so 2/3 of the usual
    4 * d_model keeps the weight count; rounding up keeps the matrix shapes friendly to the
    hardware (Llama 2 7B: d_model 4096 -> 11008).
    """
    hidden = int(2 * 4 * d_model / 3)
    if multiplier is not None:
        hidden = int(multiplier * hidden)
    return multiple_of * -(-hidden // multiple_of)


def _llama(n_layers: int, d_model: int, n_heads: int, n_kv_heads: int, max_seq_len: int, vocab_size: int) -> dict:
    # The block of Llama 2 (Touvron et al. 2023): pre-norm RMSNorm, SwiGLU, no biases, rotary positions
    # (split halves, as Hugging Face stores Llama), grouped-query attention, untied output.
    return dict(vocab_size=vocab_size, max_seq_len=max_seq_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                n_kv_heads=n_kv_heads, d_ff=swiglu_hidden(d_model, multiple_of=32), dropout=0.0,
                attention_dropout=0.0, norm="pre", norm_type="rms", activation="swiglu", bias=False,
                type_vocab_size=0, tie_embeddings=False, position="rope", rope_pairing="half", rope_theta=10000.0,
                norm_eps=1e-5)


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
    # gpt-mini's size with the modern block: 4 query heads sharing 2 key/value heads.
    "llama-mini": _llama(4, 256, 4, 2, 256, vocab_size=8192),
}
