"""``python -m planaria.cli ...`` is the ``planaria`` command (how ``LocalCluster`` and the
chaos harness start their processes, with the interpreter they run in)."""

import sys

from planaria.cli._main import main

sys.exit(main())
