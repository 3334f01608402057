"""Run the serving benchmark without the CLI wrapper: `python bench/serve.py --batches 1,8`.

Same options and output as `tessera bench serve` (which is the supported entry point).
"""

import sys

from tessera.services.cli import app

if __name__ == "__main__":
    app(["bench", "serve", *sys.argv[1:]])
