"""``python -m distnet COMMAND ...``, the same as the ``distnet`` command."""
import sys

from .cli.main import main

sys.exit(main())
