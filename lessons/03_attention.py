"""Attention and the Transformer: built step by step, masked, pictured, and checked against minilm.

What you will learn:
- scaled dot-product attention as four steps (project, score, softmax, mix), and why the
  scores are divided by sqrt(head size);
- causal masks (a decoder cannot peek at the future) and padding masks (a batch of
  sentences of different lengths), as bool masks or as additive ones, and what they do
  to the attention weights;
- what a trained attention head looks at: a one-layer Transformer learns to reverse a
  sequence, and its attention map turns into the anti-diagonal;
- that the readable reference (`minilm.kernels.reference`, the ground truth of every attention in
  the course) equals `minilm.nn.attention`'s fused backends, and that a whole Transformer
  block is just attention + feed-forward + residuals + layer norms;
- where the compute goes: weights grow with width, attention with the square of length.

Run: python lessons/03_attention.py [--quick | --full | --smoke]
"""
from __future__ import annotations

import inspect
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from minilm.kernels.reference import attention_reference, attention_weights
from minilm import ModelConfig
from minilm.nn.attention import attention
from minilm.course.lesson import start
from minilm.nn.model import Block, Transformer


def main(argv=None):
    lesson = start(__file__, argv)
    torch.set_num_threads(1)  # models this small lose more to thread synchronisation than they gain
    words, q, k, w = section_1_four_steps(lesson)
    w_causal, w_pad, n_pad = section_2_masks(lesson, words, q, k)
    section_3_trained_head(lesson, [(w, "no mask (random weights)", words, words),
                                    (w_causal, "causal mask", words, words),
                                    (w_pad, f"padding mask ({n_pad} pads)", words,
                                     words[:len(words) - n_pad] + ["[PAD]"] * n_pad)])
    section_4_backends(lesson)
    section_5_block(lesson)
    section_6_compute(lesson)
    lesson.finish()


def section_1_four_steps(lesson):
    """Attention on five stand-in word vectors, and why scores are divided by sqrt(head size).
    Returns (words, q, k, weights): q and k (1, T, D), weights (1, 1, T, T)."""
    lesson.section("1. Attention in four steps")
    words = ["the", "film", "was", "not", "good"]
    T, D = len(words), 16
    x = torch.randn(1, T, D)  # (B, T, D): stand-in word vectors
    Wq, Wk, Wv = (torch.randn(D, D) / math.sqrt(D) for _ in range(3))
    q, k, v = (x @ W for W in (Wq, Wk, Wv))  # (B, T, D) each
    w = attention_weights(q[:, None], k[:, None])  # one head: (1, 1, T, T)
    print(inspect.getsource(attention_weights))
    lesson.say(f"""
        Each of the {T} words "{' '.join(words)}" is a vector of {D} numbers. Attention
        (1) projects every vector three ways: a query (what am I looking for?), a key (what do I
        contain?) and a value (what do I pass on?); (2) scores every query against every key
        with a dot product, giving a {T}x{T} table; (3) turns each row into weights that sum to
        one with a softmax; (4) replaces each word by the weighted mix of all the values. The
        weights of "{words[1]}" over the {T} words: {[round(float(a), 3) for a in w[0, 0, 1]]}
        (sum {float(w[0, 0, 1].sum()):.3f}). Printed above is `attention_weights`, steps (2) and (3)
        as the library writes them; `attention_reference` adds step (4), `weights @ v`. They are
        the ground truth every faster attention in the course is tested against.""")
    for d in (16, 64, 256):
        a, b = torch.randn(10000, d), torch.randn(10000, d)
        dots = (a * b).sum(-1)
        print(f"  head size {d:3d}: dot products have std {dots.std():6.2f}; divided by sqrt({d}): "
              f"{(dots / math.sqrt(d)).std():.2f}")
    lesson.say("""
        Why divide by sqrt(head size)? A dot product of two random d-dimensional vectors has a
        standard deviation of sqrt(d) (printed above). Large scores push the softmax into a
        one-hot corner where its gradient vanishes; the division keeps the scores near unit
        scale whatever the head size.""")
    return words, q, k, w


def section_2_masks(lesson, words, q, k):
    """Causal and padding masks, bool and additive; returns (causal weights, padded weights, number of pads)."""
    lesson.section("2. Masks: no peeking, no padding")
    T = len(words)
    w_causal = attention_weights(q[:, None], k[:, None], causal=True)
    pad = torch.tensor([[True, True, True, False, False]])  # a 3-word sentence padded to 5
    n_pad = int((~pad).sum())
    w_pad = attention_weights(q[:, None], k[:, None], key_padding_mask=pad)
    additive = torch.zeros(1, T).masked_fill(~pad, float("-inf"))  # the same mask, PyTorch's additive way
    w_add = attention_weights(q[:, None], k[:, None], key_padding_mask=additive)
    print("  causal weights (row = query, column = key):")
    for i in range(T):
        print("   " + " ".join(f"{float(a):5.2f}" for a in w_causal[0, 0, i]) + f"   {words[i]}")
    lesson.say(f"""
        A decoder predicts the next word, so word i must not see words after i: the scores
        above the diagonal are set to -infinity before the softmax, which makes their weights
        exactly 0. An encoder batch pads short sentences to a common length; a padding mask
        hides the pad keys in the same way: with the last {n_pad} positions padded, the weight on
        them is {float(w_pad[0, 0][:, ~pad[0]].sum()):.1f} for every query. A mask comes in two kinds,
        with one meaning across minilm and its kernels: a bool mask keeps a key where it is
        True; a float mask is *added* to the scores, so 0 keeps a key and -inf drops it (and
        other values tilt the weights). Written as 0 / -inf, the padding mask above gives the
        same weights to within {float((w_add - w_pad).abs().max()):.1e}.""")
    return w_causal, w_pad, n_pad


def section_3_trained_head(lesson, panels: list) -> None:
    """A one-layer Transformer learns to reverse digits; its attention map next to the `panels` of
    sections 1-2, each (weights (1, 1, T, T), title, query labels, key labels)."""
    lesson.section("3. What a trained head looks at: learning to reverse")
    n_digits, T, width = 10, 8, 64
    steps = lesson.pick(smoke=30, quick=300, full=1000)
    config = ModelConfig(vocab_size=n_digits, max_seq_len=T, d_model=width, n_layers=1, n_heads=1, d_ff=2 * width,
                         dropout=0.0, attention_dropout=0.0, norm="pre", type_vocab_size=0)
    body, head = Transformer(config, causal=False), torch.nn.Linear(width, n_digits)
    opt = torch.optim.AdamW([*body.parameters(), *head.parameters()], lr=3e-3)
    gen = torch.Generator().manual_seed(lesson.seed)
    for step in range(steps):
        seq = torch.randint(0, n_digits, (64, T), generator=gen)  # (B, T)
        loss = F.cross_entropy(head(body(seq)).flatten(0, 1), seq.flip(1).flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    seq = torch.randint(0, n_digits, (512, T), generator=gen)
    with torch.no_grad():
        acc = float((head(body(seq)).argmax(-1) == seq.flip(1)).float().mean())
        block = body.blocks[0]
        h = block.attn_norm(body.embeddings(seq[:1]))  # (1, T, D): exactly what the attention layer receives
        split = lambda t: t.view(1, T, 1, width).transpose(1, 2)  # (1, H=1, T, D)
        learned = attention_weights(split(block.attn.q(h)), split(block.attn.k(h)))  # (1, 1, T, T)
    lesson.say(f"""
        A one-layer Transformer ({sum(p.numel() for p in body.parameters()):,} parameters) is
        trained for {steps} steps to output its input backwards: position i must copy the
        digit at position {T - 1} - i. Only attention can move information between positions, so
        the task forces it to learn where to look. Accuracy per digit on fresh sequences:
        {acc:.1%} (chance {1 / n_digits:.0%}). Recomputing its attention with `attention_weights` and the
        layer's own projections, position 0 puts {float(learned[0, 0, 0, T - 1]):.0%} of its
        weight on position {T - 1}: the map is the anti-diagonal (picture).""")
    lesson.record("reversal accuracy (1-layer Transformer)", acc, "{:.1%}")
    digits = [str(int(d)) for d in seq[0]]
    panels = [*panels, (learned, f"trained to reverse ({acc:.0%})", digits, digits)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.5 * len(panels), 3.6))
    for ax, (m, title, rows, cols) in zip(axes, panels):
        ax.imshow(m[0, 0].detach(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(cols)), cols, rotation=60, fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("key")
    axes[0].set_ylabel("query")
    lesson.save_figure(fig, "attention_maps")


def section_4_backends(lesson) -> None:
    """The reference against the sdpa backend, causal or not, with bool and additive padding masks."""
    lesson.section("4. The same numbers from every backend of minilm.nn.attention")
    B, H, T, Dh = 3, 4, 11, 32
    q, k, v = (torch.randn(B, H, T, Dh, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([11, 7, 3])
    mask = torch.arange(T)[None] < lengths[:, None]  # (B, T): True for real tokens
    masks = {"bool": mask, "additive": torch.zeros(B, T, dtype=torch.float64).masked_fill(~mask, float("-inf"))}
    worst = 0.0
    for causal in (False, True):
        for kind, m in masks.items():
            truth = attention_reference(q, k, v, causal=causal, key_padding_mask=m)
            fused = attention(q, k, v, causal=causal, key_padding_mask=m, backend="sdpa")
            diff = float((truth - fused).abs().max())
            worst = max(worst, diff)
            print(f"  causal={causal!s:5s} {kind:8s} mask: max |reference - sdpa| = {diff:.1e}")
    lesson.say(f"""
        `minilm.nn.attention` is one function with several backends: `reference` is the
        function above, `sdpa` calls torch's fused kernel. On a batch of {B} sentences
        (lengths {lengths.tolist()}), {H} heads, with and without the causal mask, with the
        padding given as a bool or as an additive mask, they differ by at most {worst:.1e} in
        float64. On a GPU, `backend="triton"` runs the course's own flash-attention kernel
        (lessons 10-11), tested against the same reference.""")
    lesson.record("reference vs sdpa backend (max abs diff)", worst, "{:.1e}")


def section_5_block(lesson) -> None:
    """A Transformer block rebuilt by hand from a `Block`'s own weights, post-norm (BERT) and pre-norm (GPT-2)."""
    lesson.section("5. A whole Transformer block")
    B, T, D, H = 2, 9, 64, 4
    results = {}
    for norm in ("post", "pre"):
        cfg = ModelConfig(vocab_size=100, max_seq_len=16, d_model=D, n_layers=1, n_heads=H, d_ff=4 * D,
                          dropout=0.0, attention_dropout=0.0, norm=norm)
        block = Block(cfg, causal=False).eval()
        x = torch.randn(B, T, D)  # (B, T, D)

        def self_attention(h):
            split = lambda t: t.view(B, T, H, D // H).transpose(1, 2)  # (B, H, T, Dh)
            y = attention_reference(split(block.attn.q(h)), split(block.attn.k(h)), split(block.attn.v(h)))
            return block.attn.o(y.transpose(1, 2).reshape(B, T, D))  # heads side by side, mixed by o

        ff = lambda h: block.ff.down(F.gelu(block.ff.up(h)))  # widen, GELU, narrow: applied to each token alone
        with torch.no_grad():
            if norm == "post":  # BERT: add, then normalise
                h = block.attn_norm(x + self_attention(x))
                mine = block.ff_norm(h + ff(h))
            else:  # GPT-2: normalise a copy, add its update to the untouched residual stream
                h = x + self_attention(block.attn_norm(x))
                mine = h + ff(block.ff_norm(h))
            results[norm] = float((mine - block(x)).abs().max())
    lesson.say(f"""
        A block is: attention (tokens exchange information), a feed-forward network (each
        token processed alone: widen {cfg.d_ff // cfg.d_model}x, GELU, narrow), each wrapped in a residual
        connection (x + f(x), so gradients have a straight path through deep stacks) and a layer
        norm. BERT normalises after each addition ("post-norm"); GPT-2 before each sublayer
        ("pre-norm"), which trains more stably. Rebuilt by hand from minilm.nn.model.Block's own
        weights, both agree with the library to {max(results.values()):.1e}.""")
    lesson.record("hand-built block vs minilm Block (max abs diff)", max(results.values()), "{:.1e}")


def section_6_compute(lesson) -> None:
    """Training FLOPs per token: the weights' share against the attention scores', as the length grows."""
    lesson.section("6. Where the compute goes")
    cfg = ModelConfig.preset("bert-mini", vocab_size=8192)
    print(f"  bert-mini: d_model {cfg.d_model}, {cfg.n_layers} layers; training FLOPs per token:")
    share = {}
    for seq_len in (128, 512, 2048, 8192):
        # q, k, v, o (4 d^2) and the feed-forward (2 d d_ff) per layer, 6 FLOPs per weight for forward + backward
        weights = 6 * cfg.n_layers * (4 * cfg.d_model ** 2 + 2 * cfg.d_model * cfg.d_ff)
        scores = 12 * cfg.n_layers * cfg.d_model * seq_len
        share[seq_len] = scores / (weights + scores)
        print(f"    T = {seq_len:5d}: weights {weights / 1e6:6.1f} MFLOP, attention scores {scores / 1e6:6.1f} MFLOP "
              f"({share[seq_len]:.0%} of the total)")
    short, long = min(share), max(share)
    lesson.say(f"""
        Per token, the weight matrices cost the same whatever the length, while the score
        table grows with the sequence: every token attends to every other, so a sequence's
        attention cost is quadratic in its length. At {short} tokens, BERT's usual length, the
        scores are {share[short]:.0%} of the work; at {long:,} they are {share[long]:.0%}, and the T x T table no
        longer fits in fast memory. That is the problem flash attention (lesson 11) solves.""")


if __name__ == "__main__":
    main()
