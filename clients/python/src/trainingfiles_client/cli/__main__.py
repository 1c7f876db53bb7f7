"""``python -m trainingfiles_client.cli``: the ``trainingfiles`` command."""

import sys

from . import main

sys.exit(main())
