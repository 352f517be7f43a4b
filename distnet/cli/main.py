"""``distnet train|evaluate|predict|plot|bench|launch ...``: one entry point for every command,
beside the ``python -m distnet.<command>`` forms (same flags, same behaviour).

Nothing heavy is imported before the command is chosen: ``train`` must set its BLAS thread
count before NumPy loads.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("distnet.train", "train a model, on one process or under mpirun"),
    "evaluate": ("distnet.cli.evaluate", "score a checkpoint: accuracy, loss, per-class, confusion matrix"),
    "predict": ("distnet.cli.predict", "classify images, .npy arrays or IDX files with a checkpoint"),
    "plot": ("distnet.cli.plot", "plot training curves of runs (needs matplotlib)"),
    "bench": ("distnet.bench", "measure training images/s per model and batch size"),
    "launch": ("distnet.launch", "run training under mpirun, restarting failed jobs"),
}


def usage() -> str:
    lines = ["usage: distnet COMMAND [ARGS...]   (distnet COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name:<9} {what}" for name, (_, what) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"distnet: error: unknown command {name!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv = [f"distnet {name}", *rest]  # so --help and usage errors name the command
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
