"""``python -m distnet.plot RUN_OR_METRICS... -o curves.png`` (code in distnet/cli/plot.py)."""
import sys

if __name__ == "__main__":
    from .cli.plot import main

    sys.exit(main())
