"""``python -m stabilize_events``: the ``stabilize-events`` command line."""

import sys

from stabilize_events.cli import main

if __name__ == "__main__":
    sys.exit(main())
