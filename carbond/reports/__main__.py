"""``python -m carbond.reports report lifecycle|compare ...`` / ``estimate ...``.

The same commands as ``carbond report`` and ``carbond estimate`` (one parser, one set of
exit codes: :func:`carbond.cli.main`). Scheduled reports run through this entry point, as a
child process of the daemon.
"""

import sys

from carbond.cli import main

sys.exit(main())
