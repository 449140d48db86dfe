"""``python -m absurd.cli``: the same as the ``absurdctl`` script."""

import sys

from absurd.cli import main

sys.exit(main())
