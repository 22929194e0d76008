"""``python -m bulkjobs``: the same as the ``bulkjobs`` command."""

import sys

from bulkjobs.cli import main

sys.exit(main())
