"""`minilm generate`: continue a prompt with a causal LM saved by `minilm pretrain`.

    minilm generate runs/pretrain-gpt-mini --prompt "The film" --max-new-tokens 60 --top-p 0.9

Design choices:
- Any model source (`minilm.train.model_source`): a checkpoint or run folder (self-describing:
  model class, config, weights and tokenizer) or a Hugging Face GPT-2 folder. A masked LM is
  refused with a pointer to `fill-mask`.
- Sampling is `nn.sampling.generate_text` over `CausalLM.generate` (KV cache; greedy with
  --temperature 0); --seed makes it reproducible. An empty prompt starts from <|endoftext|>, the document separator.
"""
from __future__ import annotations

import argparse

from minilm.nn.model import CausalLM
from minilm.nn.sampling import check_sampling, generate_text
from minilm.train import model_source
from minilm.train.trainer import resolve_device


def configure(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("checkpoint", help="a checkpoint or run folder holding a CausalLM and its tokenizer, or a Hugging Face GPT-2 "
                         "folder")
    a("--prompt", default="", help="text to continue (default: start a new document)")
    a("--max-new-tokens", type=int, default=50)
    a("--temperature", type=float, default=1.0, help="0 = greedy")
    a("--top-k", type=int, default=None)
    a("--top-p", type=float, default=None)
    a("--num-samples", type=int, default=1)
    a("--seed", type=int, default=0)
    a("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def run(args) -> int:
    if args.max_new_tokens < 1 or args.num_samples < 1:  # before the model is loaded
        generate_text(None, None, "", max_new_tokens=args.max_new_tokens, num_samples=args.num_samples)
    check_sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cli=True)
    device = resolve_device(args.device)
    source = model_source.resolve(args.checkpoint, flag="checkpoint", accept=("checkpoint", "huggingface"))
    model, tokenizer = model_source.load(source, CausalLM, device=device,
                                         hint="; for a masked LM use `minilm fill-mask`")
    texts = generate_text(model, tokenizer, args.prompt, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          num_samples=args.num_samples, seed=args.seed)
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1}")
        print(args.prompt + text)
    return 0
