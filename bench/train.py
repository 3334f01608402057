"""Run the training benchmark without the CLI wrapper: `python bench/train.py --users 3`.

Same options and output as `tessera bench train` (which is the supported entry point).
"""

import sys

from tessera.services.cli import app

if __name__ == "__main__":
    app(["bench", "train", *sys.argv[1:]])
