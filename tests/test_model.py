"""The Transformer and its heads: names, masks, causality, padding, heads, sizes, backends."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.nn.config import ModelConfig
from minilm.course.boundary import student
from minilm.nn.model import CausalLM, MaskedLM, ModelOutput, SequenceClassifier, TokenClassifier, Transformer

V = 61


def bert(**kw):
    return ModelConfig.preset("bert-tiny", vocab_size=V, max_seq_len=32, d_model=32, n_heads=4, d_ff=64, **kw)


def gpt(**kw):
    return ModelConfig.preset("gpt-micro", vocab_size=V, max_seq_len=32, d_model=32, n_heads=4, d_ff=64, **kw)


def test_module_names_other_modules_rely_on():
    model = MaskedLM(bert())
    block = model.body.blocks[1]
    for name in ("q", "k", "v", "o"):
        assert isinstance(getattr(block.attn, name), torch.nn.Linear)
    assert isinstance(block.ff.up, torch.nn.Linear) and isinstance(block.ff.down, torch.nn.Linear)
    assert isinstance(block.attn_norm, torch.nn.LayerNorm) and isinstance(block.ff_norm, torch.nn.LayerNorm)
    assert block.attn.prefix is None
    assert model.head.decoder.weight is model.body.embeddings.tok.weight  # tied
    lm = CausalLM(gpt())
    assert lm.lm_head.weight is lm.body.embeddings.tok.weight
    assert isinstance(lm.body.final_norm, torch.nn.LayerNorm)


def test_a_pretrained_body_moves_between_classes():
    mlm = MaskedLM(bert())
    for task in (SequenceClassifier(bert(), num_labels=3), TokenClassifier(bert(), num_labels=5)):
        task.body.load_state_dict(mlm.body.state_dict())
        assert torch.equal(task.body.blocks[0].attn.q.weight, mlm.body.blocks[0].attn.q.weight)


def test_masked_lm_runs_the_head_only_at_labelled_positions():
    torch.manual_seed(0)
    model = MaskedLM(bert()).eval()
    ids = torch.randint(0, V, (3, 10))
    labels = torch.full((3, 10), -100)
    labels[0, 1], labels[2, 4], labels[2, 9] = 5, 6, 7
    seen = []
    model.head.decoder.register_forward_hook(lambda m, inp, out: seen.append(tuple(inp[0].shape)))
    out = model(ids, labels=labels)
    assert isinstance(out, ModelOutput)
    assert seen == [(3, 32)]  # the vocabulary product ran on 3 rows, not 30
    full = model(ids).logits  # (3, 10, V)
    assert full.shape == (3, 10, V)
    where = labels != -100
    torch.testing.assert_close(out.logits, full[where])
    assert out.labels.tolist() == [5, 6, 7]
    torch.testing.assert_close(out.loss, F.cross_entropy(full[where], labels[where]))
    none = model(ids, labels=torch.full((3, 10), -100))
    assert none.loss.item() == 0.0 and none.logits.shape == (0, V)


def test_heads_shapes_and_losses():
    ids = torch.randint(0, V, (2, 7))
    seq = SequenceClassifier(bert(), num_labels=3)(ids, labels=torch.tensor([0, 2]))
    assert seq.logits.shape == (2, 3) and seq.loss.ndim == 0
    tags = torch.randint(0, 4, (2, 7))
    tags[:, 0] = -100
    tok = TokenClassifier(bert(), num_labels=4)(ids, labels=tags)
    assert tok.logits.shape == (2, 7, 4) and torch.equal(tok.labels, tags)
    torch.testing.assert_close(tok.loss, F.cross_entropy(tok.logits.flatten(0, 1), tags.flatten(), ignore_index=-100))
    lm = CausalLM(gpt())(ids, labels=ids)
    assert lm.logits.shape == (2, 7, V) and lm.loss.ndim == 0
    with pytest.raises(ValueError, match="num_labels"):
        SequenceClassifier(bert(), num_labels=1)


@settings(max_examples=15, deadline=None)
@given(t=st.integers(0, 10), backend=st.sampled_from(["reference", "sdpa"]), seed=st.integers(0, 1000),
       position=st.sampled_from(["learned", "rope"]))
def test_causality(t, backend, seed, position):
    """Changing tokens after position t never changes the logits at positions <= t."""
    torch.manual_seed(seed)
    model = CausalLM(gpt(attention_backend=backend, position=position)).eval()
    ids = torch.randint(0, V, (2, 12))
    changed = ids.clone()
    changed[:, t + 1:] = torch.randint(0, V, changed[:, t + 1:].shape)
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % V  # surely different
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-5, rtol=1e-5)
    if t + 1 < 12:
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@settings(max_examples=15, deadline=None)
@given(n_real=st.integers(1, 9), n_pad=st.integers(1, 6), backend=st.sampled_from(["reference", "sdpa"]),
       encoder=st.booleans(), seed=st.integers(0, 1000), position=st.sampled_from(["learned", "rope"]))
def test_padding_invariance(n_real, n_pad, backend, encoder, seed, position):
    """Appending masked-out padding never changes the outputs at the real positions."""
    torch.manual_seed(seed)
    kw = dict(attention_backend=backend, position=position)
    model = (MaskedLM(bert(**kw)) if encoder else CausalLM(gpt(**kw))).eval()
    ids = torch.randint(0, V, (2, n_real))
    padded = torch.cat([ids, torch.zeros(2, n_pad, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, n_real), torch.zeros(2, n_pad)], dim=1).bool()
    with torch.no_grad():
        a = model(ids).logits
        b = model(padded, mask).logits
    torch.testing.assert_close(b[:, :n_real], a, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(i=st.integers(0, 200), j=st.integers(0, 200), shift=st.integers(0, 300), seed=st.integers(0, 1000))
def test_rotary_scores_depend_only_on_distance(i, j, shift, seed):
    """q at position i and k at position j score the same as at i + shift and j + shift, and norms are kept."""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(1, 2, 1, 16, generator=g, dtype=torch.float64), torch.randn(1, 2, 1, 16, generator=g,
                                                                                    dtype=torch.float64)
    their = student("minilm.nn.model")  # assignment attention's rotate, as the student wrote it
    qi, kj, qs, ks = their.rotate(q, i), their.rotate(k, j), their.rotate(q, i + shift), their.rotate(k, j + shift)
    score, shifted = (qi * kj).sum(-1), (qs * ks).sum(-1)
    torch.testing.assert_close(score, shifted, atol=1e-4, rtol=1e-4)  # the angles are float32
    torch.testing.assert_close(qi.norm(dim=-1), q.norm(dim=-1))
    if i != j:  # and the distance does matter
        assert not torch.allclose(score, (q * k).sum(-1))


def test_rotary_model_has_no_position_table_and_sees_order():
    config = bert(position="rope", dropout=0.0, attention_dropout=0.0)
    model = MaskedLM(config).eval()
    assert model.body.embeddings.pos is None
    assert model.describe()["params"] == sum(p.numel() for p in MaskedLM(bert()).parameters()) - 32 * 32
    ids = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # reversing the sequence must change the outputs: position is not lost
        for block in model.body.blocks:  # sharpen attention: at init it is nearly uniform, order or not
            block.attn.q.weight.mul_(30)
            block.attn.k.weight.mul_(30)
        a, b = model(ids).logits, model(ids.flip(1)).logits.flip(1)
    assert not torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="position"):
        ModelConfig.preset("bert-tiny", position="alibi")
    from minilm.nn.hf import to_hf
    with pytest.raises(ValueError, match="no Hugging Face"):
        to_hf(model)


def test_mean_pooling_ignores_padding_and_survives_a_checkpoint(tmp_path):
    from minilm.train.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    model = SequenceClassifier(bert(dropout=0.0, attention_dropout=0.0), num_labels=3, pooling="mean").eval()
    ids = torch.randint(0, V, (2, 6))
    padded = torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 3)], dim=1).bool()
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask).logits, model(ids).logits, atol=1e-5, rtol=1e-5)
        cls = SequenceClassifier(model.config, num_labels=3)
        cls.load_state_dict(model.state_dict())
        assert not torch.allclose(cls(ids).logits, model(ids).logits)  # the pooling really differs
    save_checkpoint(tmp_path / "ck", model)
    loaded, _ = load_model(tmp_path / "ck")
    assert loaded.pooling == "mean"
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(bert(), num_labels=2, pooling="max")


def test_fully_padded_row_gives_no_nan():
    model = MaskedLM(bert())
    ids = torch.randint(0, V, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]])
    labels = torch.full((2, 6), -100)
    labels[0, 1] = 3
    labels[1, 2] = 4
    out = model(ids, mask, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("make", [lambda b: MaskedLM(bert(attention_backend=b)),
                                  lambda b: CausalLM(gpt(attention_backend=b))])
def test_backends_agree_on_a_whole_model(make):
    torch.manual_seed(0)
    ref = make("reference").double()
    fast = make("sdpa").double()
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(0, V, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    for model in (ref, fast):
        model.eval()
        model(ids, mask).logits.sum().backward()
    torch.testing.assert_close(fast(ids, mask).logits, ref(ids, mask).logits)
    for (name, p), q in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


@pytest.mark.parametrize("backend", ["reference", "sdpa", "auto"])
def test_training_with_dropout_runs_on_every_backend(backend):
    torch.manual_seed(0)
    model = MaskedLM(bert(attention_backend=backend, dropout=0.2, attention_dropout=0.2)).train()
    ids = torch.randint(0, V, (2, 8))
    labels = torch.where(torch.rand(2, 8) < 0.5, ids, -100)
    labels[0, 0] = ids[0, 0]
    a, b = model(ids, labels=labels), model(ids, labels=labels)
    assert not torch.equal(a.logits, b.logits)  # dropout is on
    a.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_wrapped_projections_give_the_same_result_as_the_fused_one():
    """Plain q/k/v run as one fused matmul; wrapped ones (LoRA) one by one: the numbers must agree."""
    torch.manual_seed(0)
    model = MaskedLM(bert()).eval()
    ids = torch.randint(0, V, (2, 7))
    fused = model(ids).logits

    class Wrapped(torch.nn.Linear):
        pass

    for block in model.body.blocks:
        old = block.attn.v
        block.attn.v = Wrapped(32, 32)
        block.attn.v.load_state_dict(old.state_dict())
    torch.testing.assert_close(model(ids).logits, fused, atol=1e-6, rtol=1e-6)


def test_prefix_slot_is_attended_by_every_query():
    torch.manual_seed(0)
    model = CausalLM(gpt()).eval()
    ids = torch.randint(0, V, (2, 5))
    with torch.no_grad():
        before = model(ids).logits

    class Prefix(torch.nn.Module):
        def forward(self, batch_size):
            k = torch.randn(1, 4, 3, 8).expand(batch_size, -1, -1, -1)  # (B, H, P, Dh)
            return k, torch.randn(1, 4, 3, 8).expand(batch_size, -1, -1, -1)

    model.body.blocks[0].attn.prefix = Prefix()
    with torch.no_grad():
        after = model(ids, torch.ones(2, 5, dtype=torch.bool)).logits
    assert not torch.allclose(before[:, 0], after[:, 0])  # even the first token sees the prefix


def test_describe_counts_parameters_and_flops():
    c = bert()
    model = MaskedLM(c)
    d = model.describe(seq_len=16)
    assert d["params"] == sum(p.numel() for p in model.parameters())
    per_layer = 4 * (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + 2 * 2 * 32
    head = 32 * 32 + 32 + 2 * 32 + V  # transform + norm + decoder bias (decoder weight is the embedding)
    assert d["non_embedding_params"] == c.n_layers * per_layer + 2 * 32 + head  # + embedding norm
    assert d["matmul_params"] == d["non_embedding_params"] + V * 32
    assert d["flops_per_token"] == 6 * d["matmul_params"] + 12 * c.n_layers * 32 * 16


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("bert-huge")
    with pytest.raises(ValueError, match="max_seq_len"):
        MaskedLM(bert())(torch.zeros(1, 40, dtype=torch.long))


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("make", [lambda b: MaskedLM(bert(attention_backend=b, d_model=128, n_heads=2, d_ff=256)),
                                  lambda b: CausalLM(gpt(attention_backend=b, d_model=128, n_heads=2, d_ff=256))])
def test_auto_backend_on_cuda_matches_reference(make):
    """On a GPU `auto` routes to the Triton kernel (eval, no dropout) or sdpa; both must equal reference."""
    torch.manual_seed(0)
    ref, fast = make("reference").cuda().eval(), make("auto").cuda().eval()
    fast.load_state_dict(ref.state_dict())
    ids = torch.randint(0, V, (4, 32), device="cuda")
    mask = torch.ones(4, 32, device="cuda")
    mask[1, 20:] = 0
    for dtype, tol in [(torch.float32, 1e-3), (torch.bfloat16, 5e-2)]:
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            a, b = ref(ids, mask).logits.float(), fast(ids, mask).logits.float()
        torch.testing.assert_close(b, a, atol=tol, rtol=tol)
    fast.train()
    fast(ids, mask).logits.float().sum().backward()  # training (dropout) goes through sdpa
    assert all(torch.isfinite(p.grad).all() for p in fast.parameters() if p.grad is not None)


def _entry_points():
    """Every model entry point that takes an attention_mask: (name, model, forward -> the tensor it returns)."""
    from minilm.nn import peft
    from minilm.nn.electra import ELECTRA

    kw = dict(dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    prefixed = peft.apply_prefix(SequenceClassifier(bert(**kw), num_labels=3, pooling="mean"), n_prefix=2)
    masked = torch.full((2, 9), -100)
    masked[:, 2] = 5
    return [
        ("Transformer", Transformer(bert(**kw), causal=False), lambda m, ids, mask: m(ids, mask)),
        ("MaskedLM", MaskedLM(bert(**kw)), lambda m, ids, mask: m(ids, mask).logits),
        ("MaskedLM with labels", MaskedLM(bert(**kw)), lambda m, ids, mask: m(ids, mask, labels=masked).loss),
        ("CausalLM", CausalLM(gpt(**kw)), lambda m, ids, mask: m(ids, mask).logits),
        ("SequenceClassifier cls", SequenceClassifier(bert(**kw), num_labels=3),
         lambda m, ids, mask: m(ids, mask).logits),
        ("SequenceClassifier mean", SequenceClassifier(bert(**kw), num_labels=3, pooling="mean"),
         lambda m, ids, mask: m(ids, mask).logits),
        ("TokenClassifier", TokenClassifier(bert(**kw), num_labels=3), lambda m, ids, mask: m(ids, mask).logits),
        ("prefix-tuned classifier", prefixed, lambda m, ids, mask: m(ids, mask).logits),
        ("ELECTRA", ELECTRA(bert(**kw), special_ids=(0,)),
         lambda m, ids, mask: m(ids, mask, labels=masked, rng=torch.Generator().manual_seed(0)).loss),
        ("ELECTRA discriminator", ELECTRA(bert(**kw), special_ids=(0,)), lambda m, ids, mask: m(ids, mask).logits),
    ]


ENTRY_POINTS = _entry_points()


@settings(max_examples=20, deadline=None)
@given(lengths=st.lists(st.integers(3, 9), min_size=2, max_size=2), seed=st.integers(0, 1000),
       backend=st.sampled_from(["reference", "sdpa"]))
def test_a_mask_means_the_same_at_every_entry_point(lengths, seed, backend):
    """bool True keeps, integer 1 keeps, float is added to the scores (0 keeps, -inf drops): the same
    outputs at every entry point; a float mask of 0s and 1s (a keep mask in float clothes) is refused."""
    torch.manual_seed(seed)
    ids = torch.randint(1, V, (2, 9))
    keep = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]  # (2, 9)
    additive = torch.zeros(2, 9).masked_fill(~keep, float("-inf"))
    for name, model, run in ENTRY_POINTS:
        for module in model.modules():
            if hasattr(module, "config"):
                module.config.attention_backend = backend
        model.eval()
        with torch.no_grad():
            want = run(model, ids, keep)
            torch.testing.assert_close(run(model, ids, keep.long()), want, msg=name)
            torch.testing.assert_close(run(model, ids, additive), want, atol=1e-5, rtol=1e-5, msg=name)
            with pytest.raises(ValueError, match="float tensor of 0s and 1s"):
                run(model, ids, keep.float())
