"""``python -m distnet.evaluate CHECKPOINT ...``: the command (code in distnet/cli/evaluate.py).

Imported, this module stays callable as the API function ``distnet.evaluate(model, data,
loss=..., ...)`` (distnet.api.evaluate), so importing it does not hide that function.
"""
import sys

from .cli._callable_module import make_callable

make_callable(__name__, "distnet.api", "evaluate")

if __name__ == "__main__":
    from .cli.evaluate import main

    sys.exit(main())
