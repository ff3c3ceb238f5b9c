"""One way from a name to a model: every source kind through every command that takes one.

The table below is the contract (`minilm.train.model_source`): a cell is either None (the
command runs) or the words of its one-line refusal. The Hugging Face folders are tiny random
models built with transformers here (no download).
"""
import json
import random
import re

import pytest
import torch

from minilm.cli import main as cli
from minilm.data.wordpiece import WordPiece
from minilm.nn.config import ModelConfig
from minilm.nn.model import MaskedLM, Transformer
from minilm.train import model_source
from minilm.train.checkpoint import load_model, save_checkpoint
from minilm.train.pretraining import PretrainRecipe, pretrain

transformers = pytest.importorskip("transformers")

PLAIN = "this command reads a checkpoint or run folder or a Hugging Face folder"
NOT_FINETUNED = "this command reads a fine-tuned run (finetune.json)"
PRESET, FOLDER, HF = "is a preset (random weights); ", "is a checkpoint or run folder; ", "is a Hugging Face folder"
NOT_CAUSAL = "holds a MaskedLM, not a CausalLM; for a masked LM use `minilm fill-mask`"
NOT_ENCODER = "holds a decoder (causal) body"
CLASSIFIER = "holds a SequenceClassifier, not a MaskedLM (--objective mlm continues a MaskedLM)"
FINETUNED = f"is a fine-tuned run (finetune.json); {PLAIN}"
TABLE = {  # source kind -> {command: None (runs) or the refusal's words}
    "preset": {"pretrain": None, "finetune": None, "evaluate": PRESET + NOT_FINETUNED,
               "fill-mask": PRESET + PLAIN, "generate": PRESET + PLAIN},
    "scratch": {"pretrain": None, "finetune": None, "evaluate": PRESET + NOT_FINETUNED,
                "fill-mask": PRESET + PLAIN, "generate": PRESET + PLAIN},
    "checkpoint": {"pretrain": None, "finetune": None, "evaluate": FOLDER + NOT_FINETUNED,
                   "fill-mask": None, "generate": NOT_CAUSAL},
    "run folder": {"pretrain": None, "finetune": None, "evaluate": FOLDER + NOT_FINETUNED,
                   "fill-mask": None, "generate": NOT_CAUSAL},
    "causal run folder": {"pretrain": None, "finetune": NOT_ENCODER, "evaluate": FOLDER + NOT_FINETUNED,
                          "fill-mask": "holds a CausalLM, not a MaskedLM; for a causal LM use `minilm generate`",
                          "generate": None},
    "HF BERT with MLM head": {"pretrain": None, "finetune": None, "evaluate": f"{HF}; {NOT_FINETUNED}",
                              "fill-mask": None,
                              "generate": f"{HF} of a BERT-family encoder, not a CausalLM"},
    "HF BERT headless": {"pretrain": None, "finetune": None, "evaluate": f"{HF}; {NOT_FINETUNED}",
                         "fill-mask": "is a BERT encoder without a masked-LM head",
                         "generate": f"{HF} of a BERT-family encoder, not a CausalLM"},
    "HF GPT-2": {"pretrain": None, "finetune": NOT_ENCODER, "evaluate": f"{HF}; {NOT_FINETUNED}",
                 "fill-mask": f"{HF} of a GPT-2 decoder, not a MaskedLM", "generate": None},
    "fine-tuned (full)": {"pretrain": CLASSIFIER, "finetune": None, "evaluate": None,
                          "fill-mask": FINETUNED, "generate": FINETUNED},
    "fine-tuned (LoRA)": {"pretrain": CLASSIFIER, "finetune": "holds a lora adapter on", "evaluate": None,
                          "fill-mask": FINETUNED, "generate": FINETUNED},
}
COMMANDS = ("pretrain", "finetune", "evaluate", "fill-mask", "generate")
CAUSAL = ("causal run folder", "HF GPT-2")


def _review(rng: random.Random, words: list[str]) -> tuple[str, int]:
    label = rng.randint(0, 1)
    picked = [rng.choice(words) for _ in range(rng.randint(4, 10))] + [("bad", "good")[label]]
    rng.shuffle(picked)
    return " ".join(picked) + " .", label


def _bert_config(vocab_size: int):
    return transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def world(tmp_path_factory, corpus_file, tokenizer):
    """One folder of every source kind (and the data the commands read), built once."""
    root = tmp_path_factory.mktemp("sources")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINILM_CACHE", str(root / "cache"))
        mp.setattr("minilm.store.fetch._download", lambda *a: pytest.fail(f"a test downloaded {a}"))
        words = sorted(set(re.findall(r"\w+", corpus_file.read_text())))
        rng = random.Random(0)
        (root / "reviews.tsv").write_text("".join(f"{t}\t{('negative', 'positive')[y]}\n"
                                                  for t, y in (_review(rng, words) for _ in range(160))))
        tokenizer.save(root / "tokenizer.json")
        torch.manual_seed(0)
        config = ModelConfig.preset("bert-tiny", vocab_size=tokenizer.vocab_size, max_seq_len=64)
        save_checkpoint(root / "checkpoint", MaskedLM(config), tokenizer)
        common = dict(data=str(corpus_file), preset="bert-tiny", vocab_size=320, seq_len=32, batch_size=8,
                      eval_rows=8, steps=2, warmup=1, progress=False)
        pretrain(PretrainRecipe(**common, out=str(root / "run folder")))
        pretrain(PretrainRecipe(**common, objective="clm", out=str(root / "causal run folder")))
        wordpiece = WordPiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ":"] + words, lowercase=True)
        for name, cls in (("HF BERT with MLM head", transformers.BertForMaskedLM),
                          ("HF BERT headless", transformers.BertModel)):
            cls(_bert_config(wordpiece.vocab_size)).save_pretrained(root / name)
            wordpiece.save_hf(root / name)
        gpt2 = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=2)
        transformers.GPT2LMHeadModel(gpt2).save_pretrained(root / "HF GPT-2")
        tokenizer.save_hf(root / "HF GPT-2")
        for name, method in (("fine-tuned (full)", "full"), ("fine-tuned (LoRA)", "lora")):
            assert cli(["finetune", "--data", str(root / "reviews.tsv"), "--init", str(root / "checkpoint"),
                        "--method", method, "--epochs", "1", "--batch-size", "16", "--max-len", "32",
                        "--no-progress", "--out", str(root / name)]) == 0
        yield root


def _argv(world, corpus_file, kind: str, command: str, out) -> list[str]:
    source = {"preset": "bert-tiny", "scratch": "scratch"}.get(kind, str(world / kind))
    if command == "pretrain":
        extra = ["--objective", "clm"] if kind in CAUSAL else []
        extra += ["--vocab-size", "320"] if kind in ("preset", "scratch") else []
        extra += ["--preset", "bert-tiny"] if kind == "scratch" else []
        return ["pretrain", "--init", source, "--data", str(corpus_file), "--seq-len",
                "32", "--batch-size", "8", "--eval-rows", "8", "--steps", "1", "--warmup", "1", "--no-progress",
                "--out", str(out), *extra]
    if command == "finetune":
        extra = {"preset": ["--tokenizer", str(world / "tokenizer.json")],
                 "scratch": ["--arch", str(world / "checkpoint")]}.get(kind, [])
        return ["finetune", "--data", str(world / "reviews.tsv"), "--init", source, "--epochs", "1", "--batch-size",
                "16", "--max-len", "32", "--no-progress", "--out", str(out), *extra]
    if command == "evaluate":
        return ["evaluate", source, "--out", str(out / "scores.json")]
    if command == "fill-mask":
        return ["fill-mask", source, "the movie was [MASK] ."]
    return ["generate", source, "--prompt", "the movie", "--max-new-tokens", "3"]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", list(TABLE))
def test_every_source_kind_through_every_command(world, corpus_file, kind, command, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILM_CACHE", str(world / "cache"))
    monkeypatch.setattr("minilm.store.fetch._download", lambda *a: pytest.fail(f"a test downloaded {a}"))
    argv = _argv(world, corpus_file, kind, command, tmp_path / "out")
    if command == "evaluate":
        (tmp_path / "out").mkdir()
    rc = cli(argv)
    err = capsys.readouterr().err
    refusal = TABLE[kind][command]
    if refusal is None:
        assert rc == 0, err[-2000:]
    else:
        errors = [line for line in err.splitlines() if line.startswith("minilm: error:")]
        assert rc == 2 and len(errors) == 1, err[-2000:]
        assert refusal in errors[0], errors[0]
        assert not (tmp_path / "out" / "final").exists()  # refused before training


@pytest.mark.slow
def test_pretrain_continues_a_hugging_face_bert_with_its_wordpiece(world, corpus_file, tmp_path, monkeypatch, capsys):
    """`minilm pretrain --init HF_BERT`: the folder's weights and WordPiece tokenizer feed the corpus; a headless
    folder gets a fresh masked-LM head, said in one line."""
    monkeypatch.setenv("MINILM_CACHE", str(world / "cache"))
    folder = world / "HF BERT headless"
    reference = transformers.BertModel.from_pretrained(folder).state_dict()
    out = tmp_path / "tapt"
    assert cli(["pretrain", "--init", str(folder), "--data", str(corpus_file), "--seq-len", "32", "--batch-size", "8",
                "--eval-rows", "8", "--steps", "2", "--warmup", "1", "--lr", "1e-9", "--no-progress",
                "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("has no masked-LM head: a fresh one is initialised") == 1
    model, tokenizer = load_model(out / "final")
    assert isinstance(model, MaskedLM) and isinstance(tokenizer, WordPiece)
    assert tokenizer.fingerprint() == WordPiece.from_hf(folder).fingerprint()
    torch.testing.assert_close(model.body.embeddings.tok.weight, reference["embeddings.word_embeddings.weight"],
                               atol=1e-6, rtol=0)  # lr 1e-9: the body is still the folder's
    extra = json.loads((out / "final" / "config.json").read_text())["extra"]
    assert extra["command"].startswith("minilm pretrain --init")


def test_a_source_is_decided_once(world, monkeypatch):
    """resolve() asks `is_hf_folder` once; the kind it decides is what load() acts on."""
    calls = []
    real = model_source.hf.is_hf_folder
    monkeypatch.setattr(model_source.hf, "is_hf_folder", lambda p: calls.append(p) or real(p))
    kinds = {name: model_source.resolve(world / name).kind for name in
             ("checkpoint", "run folder", "HF BERT headless", "fine-tuned (full)")}
    assert kinds == {"checkpoint": "checkpoint", "run folder": "checkpoint", "HF BERT headless": "huggingface",
                     "fine-tuned (full)": "finetuned"}
    assert len(calls) == 3  # a fine-tuned run is known by its finetune.json before the question is asked
    assert model_source.resolve(world / "run folder").path == world / "run folder" / "final"
    assert model_source.resolve("bert-tiny").preset == "bert-tiny"
    assert model_source.resolve("scratch", arch=world / "checkpoint").arch.kind == "checkpoint"
    body, _ = model_source.load(model_source.resolve(world / "fine-tuned (full)"), Transformer)
    assert isinstance(body, Transformer)
    with pytest.raises(ValueError, match="no such folder"):
        model_source.resolve(world / "nowhere")
