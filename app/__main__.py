"""`python -m app` is `muqsearch`; with no subcommand it serves the web UI, like `muqsearch serve`."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["serve"]))
