"""``python -m distnet.predict CHECKPOINT FILE...``: the command (code in distnet/cli/predict.py).

Imported, this module stays callable as the API function ``distnet.predict(model, inputs,
...)`` (distnet.api.predict), so importing it does not hide that function.
"""
import sys

from .cli._callable_module import make_callable

make_callable(__name__, "distnet.api", "predict")

if __name__ == "__main__":
    from .cli.predict import main

    sys.exit(main())
