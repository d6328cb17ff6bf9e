"""The ``thr`` command: ``thr train``, ``thr eval`` and the other tools, one sub-command each."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("thr.rl.trainer", "RL training (GRPO / GSPO-token) with THR steering; no arguments: the embedded default"),
    "eval": ("thr.eval.run", "greedy accuracy and Pass@K on math benchmarks"),
    "analyze": ("thr.analysis.analyze", "THR of sampled groups: paper-style figures, token heat maps, summary.json"),
    "report": ("thr.analysis.report", "self-contained HTML report of a thr train run"),
    "warm-start": ("thr.models.embedded", "train, cache or export the embedded model's warm start"),
}

USAGE = "usage: thr COMMAND [options]\n\ncommands:\n" + "\n".join(
    f"  {name:<10} {desc}" for name, (_, desc) in COMMANDS.items()
) + "\n\nRun `thr COMMAND --help` for the options of one command."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"thr: unknown command {name!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.cli_main(rest) or 0)
    except (ValueError, FileNotFoundError) as err:  # bad config or input: one clear line, no traceback
        print(f"thr {name}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
