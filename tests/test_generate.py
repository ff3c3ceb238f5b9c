"""Inference: sampling rules, KV-cache generation equals recomputation, fill-mask, and the two CLI commands."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minilm.nn.config import ModelConfig
from minilm.nn.model import CausalLM, KVCache, MaskedLM
from minilm.nn.sampling import sample_next

V = 50


def lm(max_seq_len=16, **kw):
    torch.manual_seed(0)
    return CausalLM(ModelConfig.preset("gpt-micro", vocab_size=V, max_seq_len=max_seq_len, d_model=32, n_heads=4,
                                       d_ff=64, **kw)).eval()


def test_greedy_top1_and_tiny_top_p_are_argmax():
    logits = torch.randn(4, V)
    best = logits.argmax(-1)
    assert torch.equal(sample_next(logits, temperature=0), best)
    assert torch.equal(sample_next(logits, top_k=1), best)
    assert torch.equal(sample_next(logits, top_p=1e-6), best)


def test_top_k_and_top_p_restrict_the_support():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    draws_k = {int(sample_next(logits, top_k=2, generator=g)) for _ in range(300)}
    assert draws_k == {0, 1}
    draws_p = {int(sample_next(logits, top_p=0.8, generator=g)) for _ in range(300)}
    assert draws_p == {0, 1}  # 0.5 + 0.3 reaches 0.8: token 2 is out
    draws_all = {int(sample_next(logits, generator=g)) for _ in range(2000)}
    assert draws_all == {0, 1, 2, 3}


def test_temperature_sampling_matches_the_distribution_and_is_seeded():
    probs = torch.tensor([0.6, 0.3, 0.1])
    logits = torch.log(probs).expand(20000, 3)
    counts = torch.bincount(sample_next(logits, generator=torch.Generator().manual_seed(1)), minlength=3)
    torch.testing.assert_close(counts / 20000, probs, atol=0.02, rtol=0)
    a = sample_next(logits[:10], temperature=0.7, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits[:10], temperature=0.7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, top_p=0.0)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_kv_cache_step_equals_full_forward(position):
    """Rotary positions too: cached keys keep the rotation of the position they were computed at."""
    model = lm(position=position)
    ids = torch.randint(0, V, (2, 9))
    with torch.no_grad():
        full = model(ids).logits  # (2, 9, V)
        cache = [KVCache() for _ in model.body.blocks]
        first = model(ids[:, :5], cache=cache).logits
        steps = [model(ids[:, t:t + 1], cache=cache).logits for t in range(5, 9)]
    assert len(cache[0]) == 9
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


@settings(max_examples=6, deadline=None)
@given(prompt_len=st.integers(1, 6), new=st.integers(1, 16), seed=st.integers(0, 100),
       temperature=st.sampled_from([0.0, 1.0]))
def test_generation_with_cache_equals_without(prompt_len, new, seed, temperature):
    """Past max_seq_len (16) both fall back to a sliding window; before it the cache must not change anything."""
    model = lm()
    prompt = torch.randint(0, V, (2, prompt_len), generator=torch.Generator().manual_seed(seed))
    a = model.generate(prompt, new, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    b = model.generate(prompt, new, temperature=temperature, generator=torch.Generator().manual_seed(seed),
                       use_cache=False)
    assert a.shape == (2, prompt_len + new)
    assert torch.equal(a[:, :prompt_len], prompt)
    assert torch.equal(a, b)


def test_generate_restores_training_mode():
    model = lm().train()
    model.generate(torch.zeros(1, 2, dtype=torch.long), 3, temperature=0)
    assert model.training


class FakeTokenizer:
    """Stand-in with the Tokenizer interface fill_mask needs: one id per character."""
    cls_id, sep_id, mask_id = V - 3, V - 2, V - 1

    def encode(self, text):
        return [ord(c) % 40 for c in text]

    def token_str(self, i):
        return chr(i + 60)


def test_fill_mask_predicts_each_mask():
    torch.manual_seed(0)
    model = MaskedLM(ModelConfig.preset("bert-tiny", vocab_size=V, max_seq_len=32, d_model=32, n_heads=4, d_ff=64))
    out = model.fill_mask(FakeTokenizer(), "ab [MASK] cd [MASK]", top_k=3)
    assert len(out) == 2 and all(len(c) == 3 for c in out)
    probs = [p for c in out for _, p in c]
    assert all(0 < p <= 1 for p in probs) and out[0][0][1] >= out[0][1][1] >= out[0][2][1]
    with pytest.raises(ValueError, match="MASK"):
        model.fill_mask(FakeTokenizer(), "no mask here")


@pytest.fixture(scope="module")
def tokenizer():
    from minilm.data.tokenizer import Tokenizer
    return Tokenizer.train(["the cat sat on the mat. the dog sat on the log."] * 20, vocab_size=300)


def test_fill_mask_table_never_prints_a_control_character():
    from minilm.commands.fill_mask import format_predictions
    table = format_predictions("a [MASK] b [MASK]", [[("\x07", 0.5), (" cat", 0.25), (" ", 0.1)],
                                                   [("dog", 0.9), ("\x1b[31m", 0.05)]])
    assert all(c.isprintable() or c == "\n" for c in table), table
    assert "'\\x07' 0.500  cat 0.250  ' ' 0.100" in table and "dog 0.900  '\\x1b[31m' 0.050" in table
    assert table.endswith("best: a '\\x07' b dog")


def test_cli_generate_and_fill_mask(tmp_path, tokenizer, capsys):
    from minilm.train.checkpoint import save_checkpoint
    from minilm.cli import main

    torch.manual_seed(0)
    small = dict(vocab_size=tokenizer.vocab_size, max_seq_len=32, d_model=32, n_heads=4, d_ff=64)
    save_checkpoint(tmp_path / "gpt", CausalLM(ModelConfig.preset("gpt-micro", **small)), tokenizer)
    save_checkpoint(tmp_path / "bert", MaskedLM(ModelConfig.preset("bert-tiny", **small)), tokenizer)
    assert main(["generate", str(tmp_path / "gpt"), "--prompt", "the cat", "--max-new-tokens", "5",
                 "--temperature", "0", "--device", "cpu"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the cat")
    main(["generate", str(tmp_path / "gpt"), "--prompt", "the cat", "--max-new-tokens", "5", "--temperature", "0",
          "--device", "cpu"])
    assert capsys.readouterr().out == first  # greedy is deterministic
    assert main(["fill-mask", str(tmp_path / "bert"), "the [MASK] sat", "--top-k", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "[MASK] #1:" in out and "best: the" in out
    assert main(["generate", str(tmp_path / "bert"), "--device", "cpu"]) == 2
    assert "holds a MaskedLM, not a CausalLM; for a masked LM use `minilm fill-mask`" in capsys.readouterr().err
    assert main(["fill-mask", str(tmp_path / "gpt"), "a [MASK]", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minilm: error: ") and "use `minilm generate`" in err and "Traceback" not in err
    # A run folder works where a checkpoint does (its final/); a device that is not there is one line, early.
    run = tmp_path / "run"
    save_checkpoint(run / "final", MaskedLM(ModelConfig.preset("bert-tiny", **small)), tokenizer)
    assert main(["fill-mask", str(run), "the [MASK] sat", "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["fill-mask", str(run), "the [MASK] sat", "--device", "gpu"]) == 2
    assert capsys.readouterr().err == ("minilm: error: --device='gpu' is invalid: expected 'auto', 'cpu', 'cuda', "
                                       "'cuda:N' or 'mps'\n")
    if not torch.cuda.is_available():
        assert main(["generate", str(tmp_path / "gpt"), "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--device='gpu'"):  # --debug: the traceback, for bug reports
        main(["fill-mask", str(run), "the [MASK] sat", "--device", "gpu", "--debug"])
