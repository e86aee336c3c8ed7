"""``python -m bench``: the load-test harness's command line (same as ``raygent-bench``)."""

import sys

from bench.harness.cli import main

sys.exit(main())
