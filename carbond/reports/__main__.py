"""``python -m carbond.reports report lifecycle|compare ...`` / ``estimate ...``: the report commands on their own.

Scheduled reports run through this entry point (a child process of the daemon).
"""

import sys

from carbond.reports.cli import main

sys.exit(main())
