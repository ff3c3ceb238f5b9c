"""The `minilm` command line: one sub-command per module of `minilm/commands/`.

Each module listed in COMMANDS defines `configure(parser)` (add its arguments) and
`run(args)` (call the library, print). The CLI only dispatches.
Works the same as `minilm …`, `python -m minilm …` and `torchrun … -m minilm …`.

An error a user can cause (a bad flag value, a missing file, a corrupt checkpoint, a run
folder in the way, a non-finite loss) prints one line, `minilm: error: …`, and exits 2; the
traceback is for bugs, or for `--debug` (or MINILM_DEBUG=1). Ctrl-C exits 130 after the
checkpoint the trainer writes.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = {
    "pretrain": ("minilm.commands.pretrain", "pretrain a model on unlabelled text (masked or causal LM)"),
    "finetune": ("minilm.commands.finetune", "fine-tune a model on a labelled task (full or parameter-efficient)"),
    "evaluate": ("minilm.commands.evaluate", "score a fine-tuned model on a data split"),
    "generate": ("minilm.commands.generate", "continue a prompt with a causal LM"),
    "fill-mask": ("minilm.commands.fill_mask", "predict the [MASK] tokens of a sentence with a masked LM"),
    "bench": ("minilm.commands.bench", "benchmarks against the reference libraries"),
    "course": ("minilm.commands.course", "run every lesson in quick mode and write runs/course/REPORT.md"),
    "assignment": ("minilm.commands.assignment", "course assignments cut from the library: list, build a handout, grade"),
    "compare": ("minilm.commands.compare", "pretrained versus scratch, LoRA versus full: the course's grids over seeds"),
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions minilm raises for mistakes and faults a user can fix (not for bugs)."""
    # Lazy: the table imports only the command asked for (`minilm --help` should not load torch).
    from minilm.train.checkpoint import CheckpointError
    from minilm.store.fetch import FetchError

    errors = [ValueError, OSError, CheckpointError, FetchError]
    if "minilm.train.trainer" in sys.modules:
        errors.append(sys.modules["minilm.train.trainer"].NonFiniteLoss)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("MINILM_DEBUG", "") not in ("", "0") or "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
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
    args.argv = argv  # what was asked for, recorded in checkpoints (a lesson calls main() with its own list)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug or not isinstance(e, _user_errors()):
            raise
        print(f"minilm: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
