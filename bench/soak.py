"""Run the soak benchmark without the CLI wrapper: `python bench/soak.py --minutes 3`.

Same options and output as `tessera bench soak` (which is the supported entry point).
"""

import sys

from tessera.services.cli import app

if __name__ == "__main__":
    app(["bench", "soak", *sys.argv[1:]])
