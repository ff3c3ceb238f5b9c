"""The `minilm` command line: one sub-command per module that owns the work.

Each module listed in COMMANDS defines `configure(parser)` (add its arguments) and
`run(args)` (do the work). The CLI only dispatches, so the code for `pretrain` lives
next to the trainer, the code for `finetune` next to fine-tuning, and so on.
Works the same as `minilm …`, `python -m minilm …` and `torchrun … -m minilm …`.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "pretrain": ("minilm.pretrain", "pretrain a model on unlabelled text (masked or causal LM)"),
    "finetune": ("minilm.finetune", "fine-tune a model on a labelled task (full or parameter-efficient)"),
    "evaluate": ("minilm.evaluate", "score a fine-tuned model on a data split"),
    "generate": ("minilm.generate", "continue a prompt with a causal LM"),
    "fill-mask": ("minilm.fill_mask", "predict the [MASK] tokens of a sentence with a masked LM"),
    "bench": ("minilm.bench", "benchmarks against the reference libraries"),
    "course": ("minilm.course", "run every lesson in quick mode and write runs/course/REPORT.md"),
    "assignment": ("minilm.assignment", "course assignments cut from the library: list, build a handout, grade"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="minilm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        # Import only the module the user asked for: `minilm generate` should not load the trainer.
        if name == wanted:
            module = importlib.import_module(module_name)
            module.configure(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
