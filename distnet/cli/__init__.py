"""The command-line tools that use a trained model: ``evaluate``, ``predict``, ``plot``, and
the one entry point ``distnet train|evaluate|predict|plot|bench|launch`` (``main.py``).

They live here, not in ``distnet/evaluate.py`` and ``distnet/predict.py``, because those two
names are the API functions ``distnet.evaluate`` and ``distnet.predict``; the modules of those
names only forward ``python -m distnet.evaluate`` to the code here (see contract C).
"""
