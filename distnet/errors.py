"""The one exception type that means "the user gave us something wrong".

The command line turns a UserError into a single line ``distnet: error: ...`` and exit code 2;
anything else is a bug and keeps its traceback.

It subclasses ValueError so that the Python API (``distnet.fit``, ``ArrayDataset``,
``build_model``...) raises what Python code expects for a bad argument: ``except ValueError``
catches a bad model file, a mismatched array or a label that does not fit the loss, with the
same text the command line prints after ``distnet: error:``.
"""


class UserError(ValueError):
    """Bad input: a missing or corrupt file, a bad flag value, a mismatched checkpoint."""
