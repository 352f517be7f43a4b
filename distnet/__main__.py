"""``python -m distnet COMMAND ...``, the same as the ``distnet`` command."""
import sys

if __name__ == "__main__":
    from .cli.main import main

    sys.exit(main())
