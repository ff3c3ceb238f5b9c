"""The Transformer, written to be read top to bottom: embeddings, blocks, heads.

    Transformer(config, causal)      the body: an encoder (BERT) or a decoder (GPT-2, Llama)
    MaskedLM(config)                 body + BERT's prediction head (masked-language modelling)
    CausalLM(config)                 decoder body + output projection, tied or not (next-token prediction)
    SequenceClassifier(config, n)    body + BERT's tanh pooler over [CLS] + linear classifier
    TokenClassifier(config, n)       body + per-token linear classifier (named entities)

Design choices:
- One `ModelConfig` is passed to every module (nanoGPT). `norm="post"` gives BERT's block
  (normalise after each residual add), `norm="pre"` GPT-2's (normalise before each
  sublayer, plus a final norm). Nothing else differs between the two families.
- The modern decoder block (Llama and its family) is the same classes configured:
  `norm_type="rms"` (RMSNorm), `activation="swiglu"` (a gated MLP with a third matrix,
  `.gate`), `bias=False`, rotary positions with their pairing and base, `n_kv_heads` <
  `n_heads` (grouped-query attention: k and v project to fewer heads, and the KV cache
  shrinks with them), untied embeddings. Each switch stands alone; lesson 13 adds them
  to GPT-2 one at a time.
- q, k, v and o are separate `nn.Linear`s, and the feed-forward is `.up` / `.down` (and `.gate`): LoRA,
  adapters and prefix tuning (minilm/nn/peft.py) find them by these names. They stay separate
  everywhere (the forward pass, saved checkpoints, BERT's layout); the one fused q|k|v is
  GPT-2's checkpoint tensor, cut apart and put together in minilm/nn/hf.py.
- Attention itself is one function, `minilm.nn.attention.attention`, with swappable backends.
- Every model returns a `ModelOutput(loss, logits, labels)`, never a tuple.
- The masked-LM head runs only at the positions that have a label: ~15% of the tokens.
  Multiplying every position by the vocabulary matrix (what BERT implementations
  usually do) is the single most expensive step of a small MLM, and is thrown away.
- Tied embeddings share one `nn.Parameter` between the token embedding and the output
  projection (nanoGPT's way), so a state dict lists it under both names.
- Every model class, the bare `Transformer` too, names the Hugging Face architectures it
  corresponds to (`hf_architectures`) and offers `from_hf` / `to_hf`; the name tables and
  the checks live in `minilm/nn/hf.py`, which never imports this file. Sampling for generation
  lives in `minilm/nn/sampling.py`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from minilm.nn import hf
from minilm.nn.attention import attention, kept, model_padding_mask
from minilm.nn.config import ModelConfig
from minilm.nn.sampling import sample_next


@dataclass
class ModelOutput:
    loss: Tensor | None  # scalar mean cross-entropy, or None without labels
    logits: Tensor  # (B, T, V) / (N, V) at labelled positions (MaskedLM with labels) / (B, C) / (B, T, C)
    labels: Tensor | None  # the targets aligned with `logits` (what accuracy should compare against)


def token_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the positions whose label is not -100; 0 (not NaN) when there are none.

    logits (..., C), labels (...). Computed in float32 even under autocast.
    """
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)  # (N, C), (N,)
    total = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp(min=1)


class KVCache:
    """The keys and values one attention layer has already computed, grown as tokens arrive."""

    def __init__(self):
        self.k: Tensor | None = None  # (B, H, T_past, Dh)
        self.v: Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[2]

    def extend(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the new keys/values (B, H, T_new, Dh); return all of them (B, H, T_past + T_new, Dh)."""
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


# ----------------------------------------------------------------------------------------------
# The body


ROPE_PAIRINGS = ("half", "interleaved")


def rotate(x: Tensor, start: int = 0, *, pairing: str = "half", theta: float = 10000.0) -> Tensor:
    """Rotary position embedding: x (B, H, T, Dh) at positions start .. start+T-1, rotated.

    Each channel pair (a, b) turns by the angle position / theta^(2i/Dh), i = 0 .. Dh/2 - 1, so
    the dot product of a rotated query and key depends on their positions only through the
    distance between them. pairing="half": pair i is (i, i + Dh/2) (Hugging Face's rotate_half,
    how every HF Llama checkpoint is stored); "interleaved": pair i is (2i, 2i + 1) (the RoFormer
    paper, Meta's reference code). The two are one rotation up to a permutation of channels.
    """
    if pairing not in ROPE_PAIRINGS:
        raise ValueError(f"rotate: pairing={pairing!r} is invalid: expected one of {ROPE_PAIRINGS}")
    if pairing == "interleaved":
        # BEGIN SOLUTION modern
        cos, sin = _rotary_table(start, x.shape[2], x.shape[3] // 2, theta, x.device, x.dtype)  # (T, Dh/2) each
        x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, T, Dh/2): the first and second channel of each pair
        turned = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, Dh/2, 2)
        return turned.flatten(3)  # (B, H, T, Dh): each pair back side by side
        # END SOLUTION modern
    # BEGIN SOLUTION attention
    half = x.shape[3] // 2
    cos, sin = _rotary_table(start, x.shape[2], half, theta, x.device, x.dtype)  # (T, Dh/2) each
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, Dh)
    # END SOLUTION attention


@functools.lru_cache(maxsize=64)
def _rotary_table(start: int, T: int, half: int, theta: float, device: torch.device,
                  dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos and sin of the rotary angles position / theta^(i/half), (T, Dh/2) each: built once per shape,
    not in every layer of every step."""
    # BEGIN SOLUTION attention
    inv_freq = theta ** (-torch.arange(half, device=device, dtype=torch.float32) / half)  # (Dh/2,)
    angle = torch.arange(start, start + T, device=device, dtype=torch.float32)[:, None] * inv_freq  # (T, Dh/2)
    return angle.cos().to(dtype), angle.sin().to(dtype)
    # END SOLUTION attention


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019), Llama's norm: no centring, no shift.

    LayerNorm subtracts the mean, divides by the standard deviation, scales and shifts; RMSNorm
    only divides by the root mean square and scales, one reduction instead of two.
    """

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))  # (D,) the gain, starting at 1

    def forward(self, x: Tensor) -> Tensor:
        """x (..., D) -> (..., D): x / sqrt(mean(x^2 over D) + eps) * weight.

        Computed in float32 at least (in bf16 the mean of squares loses precision; float64 stays
        float64), returned in x's dtype.
        """
        # BEGIN SOLUTION modern
        h = x.to(torch.promote_types(x.dtype, torch.float32))  # (..., D)
        h = h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., D) unit root mean square
        return (h * self.weight).to(x.dtype)  # (..., D)
        # END SOLUTION modern


def norm_layer(config: ModelConfig) -> nn.Module:
    """The normalisation `config.norm_type` names: LayerNorm (with a shift when config.bias) or RMSNorm."""
    if config.norm_type == "rms":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


class Embeddings(nn.Module):
    """Token + learned position (+ segment) embeddings; BERT also normalises them here.

    With `position="rope"` there is no position table: attention rotates q and k instead.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.tok = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_seq_len, config.d_model) if config.position == "learned" else None
        self.seg = nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        # Post-norm (BERT) normalises the embeddings; pre-norm (GPT-2) leaves it to each block's first norm.
        self.norm = norm_layer(config) if config.norm == "post" else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None, start: int = 0) -> Tensor:
        T = input_ids.shape[1]
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens is longer than ModelConfig.max_seq_len="
                             f"{self.config.max_seq_len}")
        x = self.tok(input_ids)  # (B, T, D)
        if self.pos is not None:
            x = x + self.pos(torch.arange(start, start + T, device=input_ids.device))  # (B, T, D)
        if self.seg is not None:
            # No segment ids means "all segment A", as in BERT.
            x = x + (self.seg.weight[0] if token_type_ids is None else self.seg(token_type_ids))  # (B, T, D)
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but ModelConfig.type_vocab_size=0 (no segment embeddings)")
        return self.drop(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention: project to q, k, v, attend per head, project back with o.

    With config.n_kv_heads < n_heads, k and v project to fewer heads, each shared by a group
    of query heads (grouped-query attention; one head for all is multi-query attention).
    """

    def __init__(self, config: ModelConfig, causal: bool):
        super().__init__()
        self.config = config
        self.causal = causal
        kv_width = config.kv_heads * config.head_dim
        self.q = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.k = nn.Linear(config.d_model, kv_width, bias=config.bias)
        self.v = nn.Linear(config.d_model, kv_width, bias=config.bias)
        self.o = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)
        # Prefix tuning's slot: a module called as prefix(B) -> (k_prefix, v_prefix), each (B, Hkv, P, Dh).
        self.prefix: nn.Module | None = None

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D) -> q (B, H, T, Dh), k and v (B, Hkv, T, Dh): every head gets its own Dh-wide slice.

        Hkv = H unless config.n_kv_heads says fewer (then k and v are narrower projections).
        """
        # BEGIN SOLUTION attention
        B, T, _ = x.shape
        Dh = self.config.head_dim
        # Three calls, whatever each layer is (LoRA wraps them): nothing here knows about PEFT.
        return tuple(layer(x).view(B, T, -1, Dh).transpose(1, 2) for layer in (self.q, self.k, self.v))
        # END SOLUTION attention

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, cache: KVCache | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        B, T, D = x.shape
        c = self.config
        q, k, v = self.project(x)  # (B, H, T, Dh), (B, Hkv, T, Dh), (B, Hkv, T, Dh)
        if c.position == "rope":  # before caching: cached keys keep their own positions
            start = len(cache) if cache is not None else 0
            q = rotate(q, start, pairing=c.rope_pairing, theta=c.rope_theta)  # (B, H, T, Dh)
            k = rotate(k, start, pairing=c.rope_pairing, theta=c.rope_theta)  # (B, Hkv, T, Dh)
        if cache is not None:
            k, v = cache.extend(k, v)  # (B, Hkv, T_past + T, Dh): grouped-query attention caches Hkv heads only
        if self.prefix is not None:
            k_prefix, v_prefix = self.prefix(B)  # (B, Hkv, P, Dh) each
            # Under autocast k is bf16/fp16 while the prefix parameters stay fp32: match k, or cat would promote.
            k = torch.cat([k_prefix.to(k.dtype), k], dim=2)  # (B, Hkv, P + Tk, Dh)
            v = torch.cat([v_prefix.to(v.dtype), v], dim=2)  # (B, Hkv, P + Tk, Dh)
            if key_padding_mask is not None:  # every query may see the whole prefix: True, or a 0 bias
                see = key_padding_mask.new_ones if key_padding_mask.dtype == torch.bool else key_padding_mask.new_zeros
                key_padding_mask = torch.cat([see(B, k_prefix.shape[2]), key_padding_mask], 1)  # (B, P + Tk)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (k_prefix.shape[2], 0), value=True)  # (..., Tq, P + Tk)
        # Keys outnumber queries with a cache or a prefix; causal masking is then aligned to the end.
        y = attention(q, k, v, causal=self.causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                      backend=c.attention_backend,
                      dropout_p=c.attention_dropout if self.training else 0.0)  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, D)  # (B, T, D): heads side by side again
        return self.drop(self.o(y))


class FeedForward(nn.Module):
    """Position-wise MLP: widen to d_ff, GELU, project back; or SwiGLU: down(silu(gate x) * up x).

    SwiGLU (Shazeer 2020, Llama) gates the widened vector with a second projection through
    SiLU: three d_model x d_ff matrices instead of two, so d_ff is usually 2/3 of GELU's
    (`minilm.nn.config.swiglu_hidden`) for the same number of weights.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.gate = nn.Linear(config.d_model, config.d_ff, bias=config.bias) if config.activation == "swiglu" else None
        self.down = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            return self.drop(self.down(self.swiglu(x)))  # (B, T, D)
        h = F.gelu(self.up(x), approximate=self.approximate)  # (B, T, F)
        return self.drop(self.down(h))  # (B, T, D)

    def swiglu(self, x: Tensor) -> Tensor:
        """x (..., D) -> the gated hidden vector (..., F): silu(gate(x)) * up(x), silu(z) = z * sigmoid(z)."""
        # BEGIN SOLUTION modern
        return F.silu(self.gate(x)) * self.up(x)  # (..., F)
        # END SOLUTION modern


class Block(nn.Module):
    """One Transformer layer: attention then feed-forward, each inside a residual connection."""

    def __init__(self, config: ModelConfig, causal: bool):
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.attn_norm = norm_layer(config)
        self.attn = SelfAttention(config, causal)
        self.ff_norm = norm_layer(config)
        self.ff = FeedForward(config)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None, cache: KVCache | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        """x (B, T, D) -> (B, T, D): self-attention, then the feed-forward, each in a residual connection.

        Post-norm (BERT, `self.pre_norm` False): x = attn_norm(x + attn(x)), then x = ff_norm(x + ff(x)).
        Pre-norm (GPT-2, Llama): x = x + attn(attn_norm(x)), then x = x + ff(ff_norm(x)); the stream
        itself is never normalised (the Transformer adds a final norm). `key_padding_mask`, `cache` and
        `attn_mask` go to `self.attn` unchanged. No new parameters, no in-place change of `x`.
        """
        # BEGIN SOLUTION attention
        if self.pre_norm:  # GPT-2: the residual stream itself is never normalised, which keeps deep stacks stable
            x = x + self.attn(self.attn_norm(x), key_padding_mask, cache, attn_mask)  # (B, T, D)
            return x + self.ff(self.ff_norm(x))  # (B, T, D)
        x = self.attn_norm(x + self.attn(x, key_padding_mask, cache, attn_mask))  # (B, T, D): BERT normalises after the add
        return self.ff_norm(x + self.ff(x))  # (B, T, D)
        # END SOLUTION attention


class Transformer(nn.Module):
    """The body shared by every task model: embeddings, a stack of blocks, a final norm.

    causal=False is an encoder (every token sees every other); causal=True a decoder.
    `Transformer.from_hf(folder)` is BERT's `BertModel` (or GPT-2's `GPT2Model`, Llama's
    `LlamaModel`): hidden states.
    """

    hf_architectures = ("BertModel", "GPT2Model", "LlamaModel")

    def __init__(self, config: ModelConfig, causal: bool):
        super().__init__()
        self.config = config
        self.causal = causal
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList([Block(config, causal) for _ in range(config.n_layers)])
        # Pre-norm leaves the residual stream unnormalised, so it needs one last norm; post-norm already ends with one.
        self.final_norm = norm_layer(config) if config.norm == "pre" else nn.Identity()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                cache: list[KVCache] | None = None, attn_mask: Tensor | None = None) -> Tensor:
        """input_ids (B, T) -> hidden states (B, T, D).

        attention_mask (B, T_past + T): True (or integer 1) for real tokens, False (0) for padding; or a
        float mask added to the scores (0 keeps, -inf drops), as `minilm.nn.attention` takes it.
        attn_mask (..., T, T_past + T) bool, broadcast to (B, H, T, T_past + T): which query may
        see which key, on top of the causal rule and the padding (e.g. `minilm.data.collate.document_mask`).
        cache: one KVCache per block (generation); positions continue after the cached tokens.
        """
        start = len(cache[0]) if cache else 0
        key_padding_mask = model_padding_mask(attention_mask)  # (B, T_past + T)
        if key_padding_mask is not None and (key_padding_mask if key_padding_mask.dtype == torch.bool
                                             else key_padding_mask == 0).all():
            key_padding_mask = None  # nothing is padded: without a mask attention takes its fastest path
        x = self.embeddings(input_ids, token_type_ids, start)  # (B, T, D)
        for i, block in enumerate(self.blocks):
            x = block(x, key_padding_mask, None if cache is None else cache[i], attn_mask)  # (B, T, D)
        return self.final_norm(x)  # (B, T, D)

    @classmethod
    def from_hf(cls, source, config: ModelConfig | None = None) -> "Transformer":
        """The bare body of a Hugging Face checkpoint: a BERT encoder, or a GPT-2 or Llama decoder.

        source: a folder (config.json + model.safetensors or pytorch_model.bin), a weights
        file, or a state dict; any BERT layout (heads present or not), any GPT-2 or Llama one.
        """
        return hf.from_hf(cls, source, config)

    def to_hf(self) -> dict[str, Tensor]:
        """These weights under BertModel's (or GPT2Model's) names."""
        return hf.to_hf(self)


def init_weights(model: nn.Module, config: ModelConfig) -> None:
    """BERT/GPT-2 initialisation (Llama's too): N(0, 0.02) weights, zero biases, unit norms.

    Pre-norm models also shrink the projections that write into the residual stream by
    1/sqrt(2 * n_layers) (GPT-2), so the stream's variance does not grow with depth.
    """
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02
            if config.norm == "pre" and (name.endswith("attn.o") or name.endswith("ff.down")):
                std = 0.02 / math.sqrt(2 * config.n_layers)
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


# ----------------------------------------------------------------------------------------------
# Task models


class TaskModel(nn.Module):
    """What every task model shares: a config, a body, HF import/export and a size report."""

    config: ModelConfig
    body: Transformer

    hf_architectures: tuple[str, ...] = ()  # the transformers classes whose checkpoints this model holds

    @classmethod
    def from_hf(cls, source, config: ModelConfig | None = None, **kwargs):
        """Build this model from a Hugging Face checkpoint (BERT layouts; GPT-2 and Llama for CausalLM).

        source: a folder (config.json + model.safetensors or pytorch_model.bin), a weights file,
        or a state dict, with or without the `bert.` prefix. Without `config` it comes from
        config.json, else from the tensor shapes. kwargs go to the constructor (num_labels=,
        pooling=); a head the checkpoint lacks starts fresh, and one line says which.
        """
        return hf.from_hf(cls, source, config, **kwargs)

    def to_hf(self) -> dict[str, Tensor]:
        """This model's weights under the Hugging Face names and layouts (a state dict)."""
        return hf.to_hf(self)

    def describe(self, seq_len: int | None = None) -> dict:
        """Parameter counts and training FLOPs per token (for MFU).

        flops_per_token = 6 * N + 12 * n_layers * d_model * seq_len (the PaLM paper's estimate of
        forward + backward): 6N for the weight matrices (N excludes position and segment
        embeddings, which are looked up, not multiplied), 12·L·d·T for the attention scores and
        the weighted sum. A masked LM's head runs at ~15% of positions, so this slightly
        overestimates its work.
        """
        seq_len = seq_len or self.config.max_seq_len
        total = sum(p.numel() for p in self.parameters())
        emb = self.body.embeddings
        lookups = sum(e.weight.numel() for e in (emb.pos, emb.seg) if e is not None)
        n = total - lookups
        non_embedding = n - emb.tok.weight.numel()
        c = self.config
        return dict(params=total, non_embedding_params=non_embedding, matmul_params=n, seq_len=seq_len,
                    flops_per_token=6 * n + 12 * c.n_layers * c.d_model * seq_len,
                    flops_formula="6*matmul_params + 12*n_layers*d_model*seq_len (training, forward+backward)")


class MaskedLM(TaskModel):
    """BERT's masked-language model: encoder body + transform (dense, GELU, norm) + tied decoder with bias."""

    hf_architectures = ("BertForMaskedLM",)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.body = Transformer(config, causal=False)
        self.head = MaskedLMHead(config)
        init_weights(self, config)
        if config.tie_embeddings:
            self.head.decoder.weight = self.body.embeddings.tok.weight

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None) -> ModelOutput:
        """With labels (B, T) (-100 = not masked): logits (N, V) at the N labelled positions only.
        Without labels: logits (B, T, V)."""
        h = self.body(input_ids, attention_mask, token_type_ids)  # (B, T, D)
        if labels is None:
            return ModelOutput(loss=None, logits=self.head(h), labels=None)
        where = labels != -100  # (B, T)
        h = h[where]  # (N, D): gather first, so the vocabulary product runs on N ~ 0.15·B·T rows
        labels = labels[where]  # (N,)
        logits = self.head(h)  # (N, V)
        loss = token_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, labels=labels)

    @torch.no_grad()
    def fill_mask(self, tokenizer, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Predict each "[MASK]" in `text`: for every mask, the top_k (token, probability) pairs."""
        marker = "[MASK]"
        pieces = text.split(marker)
        if len(pieces) < 2:
            raise ValueError(f"fill_mask needs at least one {marker} in the text, got {text!r}")
        if not 1 <= top_k <= self.config.vocab_size:
            raise ValueError(f"top_k={top_k} is invalid: expected 1 to the vocabulary size, {self.config.vocab_size}")
        ids = [tokenizer.cls_id]
        for i, piece in enumerate(pieces):
            # The word after a space carries the space in byte-level BPE: " Paris" is one token.
            ids += tokenizer.encode(piece.rstrip(" ") if i < len(pieces) - 1 else piece)
            if i < len(pieces) - 1:
                ids.append(tokenizer.mask_id)
        ids.append(tokenizer.sep_id)
        window = self.config.max_seq_len
        cut = ids[window:].count(tokenizer.mask_id)
        if cut:  # a [MASK] the model never sees cannot be filled: say so rather than leave it in the text
            raise ValueError(f"the text is {len(ids)} tokens ([CLS] and [SEP] included) but the model reads "
                             f"{window} (max_seq_len): {cut} of its {ids.count(tokenizer.mask_id)} {marker} would be "
                             f"truncated away; shorten the text before the {marker}")
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        input_ids = torch.tensor([ids[:window]], device=device)  # (1, T)
        logits = self(input_ids).logits[0]  # (T, V)
        self.train(was_training)
        probs = torch.softmax(logits[input_ids[0] == tokenizer.mask_id].float(), dim=-1)  # (M, V)
        top = probs.topk(top_k, dim=-1)
        return [[(tokenizer.token_str(int(i)), float(p)) for p, i in zip(ps, ix)]
                for ps, ix in zip(top.values, top.indices)]


class MaskedLMHead(nn.Module):
    """BERT's prediction head: transform (dense, GELU, norm), then the decoder to vocabulary logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(config.d_model, config.d_model)
        self.approximate = "tanh" if config.activation == "gelu_tanh" else "none"
        self.norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.decoder = nn.Linear(config.d_model, config.vocab_size)  # weight tied to the token embedding

    def forward(self, h: Tensor) -> Tensor:
        h = self.norm(F.gelu(self.dense(h), approximate=self.approximate))  # (..., D)
        return self.decoder(h)  # (..., V)


class CausalLM(TaskModel):
    """GPT-2 or Llama: decoder body + output projection (tied to the token embedding, or its own matrix)."""

    hf_architectures = ("GPT2LMHeadModel", "LlamaForCausalLM")

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.body = Transformer(config, causal=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        init_weights(self, config)
        if config.tie_embeddings:
            self.lm_head.weight = self.body.embeddings.tok.weight

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                cache: list[KVCache] | None = None, attn_mask: Tensor | None = None) -> ModelOutput:
        """logits (B, T, V). labels (B, T) are already the next tokens (-100 = ignore): no shift here.

        attention_mask (B, T_past + T) marks padding; attn_mask (..., T, T_past + T) bool is any
        other pattern of visible keys (document masking in packed rows), as in `Transformer.forward`.
        """
        h = self.body(input_ids, attention_mask, cache=cache, attn_mask=attn_mask)  # (B, T, D)
        logits = self.lm_head(h)  # (B, T, V)
        loss = None if labels is None else token_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, labels=labels)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> Tensor:
        """Continue the prompts input_ids (B, T) by max_new_tokens tokens; returns (B, T + max_new_tokens).

        With the cache each step feeds only the newest token; the keys and values of the
        past are kept. Once the text outgrows max_seq_len the model sees the last
        max_seq_len tokens, recomputed each step (positions shift, so a cache cannot be reused).
        Runs in eval mode (no dropout) and restores the previous mode.
        """
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"generate needs prompts input_ids (B, T) with T >= 1, got shape {tuple(input_ids.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens={max_new_tokens}: expected an integer >= 0")
        was_training = self.training
        self.eval()
        window = self.config.max_seq_len
        ids = input_ids  # (B, T)
        cache = None
        for _ in range(max_new_tokens):
            if cache is not None and ids.shape[1] <= window:
                logits = self(ids[:, -1:], cache=cache).logits[:, -1]  # (B, V): only the new token is computed
            else:
                cache = [KVCache() for _ in self.body.blocks] if use_cache and ids.shape[1] <= window else None
                logits = self(ids[:, -window:], cache=cache).logits[:, -1]  # (B, V)
            next_id = sample_next(logits, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            ids = torch.cat([ids, next_id[:, None]], dim=1)  # (B, T + 1)
        self.train(was_training)
        return ids


POOLINGS = ("cls", "mean")


class SequenceClassifier(TaskModel):
    """BERT for classification: a sentence vector through a tanh pooler, dropout, a linear classifier.

    pooling="cls" takes the [CLS] position (BERT, whose pretraining trained it for sentence-level
    prediction); "mean" averages the real tokens, which suits an encoder pretrained by masked-LM
    alone: nothing ever asked its [CLS] output to summarise the sentence.
    """

    hf_architectures = ("BertForSequenceClassification",)

    def __init__(self, config: ModelConfig, num_labels: int, pooling: str = "cls"):
        super().__init__()
        if not (isinstance(num_labels, int) and num_labels >= 2):
            raise ValueError(f"num_labels={num_labels!r} is invalid: expected an integer >= 2")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is invalid: expected one of {POOLINGS}")
        self.config = config
        self.num_labels = num_labels
        self.pooling = pooling
        self.body = Transformer(config, causal=False)
        self.pooler = nn.Linear(config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)
        init_weights(self, config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None) -> ModelOutput:
        """logits (B, C); labels (B,) class ids."""
        h = self.body(input_ids, attention_mask, token_type_ids)  # (B, T, D)
        if self.pooling == "cls":
            summary = h[:, 0]  # (B, D)
        else:
            real = (torch.ones_like(input_ids) if attention_mask is None
                    else kept(model_padding_mask(attention_mask))).to(h.dtype)  # (B, T)
            summary = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)  # (B, D)
        pooled = torch.tanh(self.pooler(summary))  # (B, D)
        logits = self.classifier(self.drop(pooled))  # (B, C)
        loss = None if labels is None else token_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, labels=labels)


class TokenClassifier(TaskModel):
    """BERT for tagging (NER): dropout and a linear classifier on every position."""

    hf_architectures = ("BertForTokenClassification",)

    def __init__(self, config: ModelConfig, num_labels: int):
        super().__init__()
        if not (isinstance(num_labels, int) and num_labels >= 2):
            raise ValueError(f"num_labels={num_labels!r} is invalid: expected an integer >= 2")
        self.config = config
        self.num_labels = num_labels
        self.body = Transformer(config, causal=False)
        self.drop = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, num_labels)
        init_weights(self, config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                labels: Tensor | None = None) -> ModelOutput:
        """logits (B, T, C); labels (B, T) tag ids, -100 where no tag is scored (sub-tokens, specials, padding)."""
        h = self.body(input_ids, attention_mask, token_type_ids)  # (B, T, D)
        logits = self.classifier(self.drop(h))  # (B, T, C)
        loss = None if labels is None else token_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, labels=labels)
