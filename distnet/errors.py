"""The one exception type that means "the user gave us something wrong".

The command line turns a UserError into a single line ``distnet: error: ...`` and exit code 2;
anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a missing or corrupt file, a bad flag value, a mismatched checkpoint."""
