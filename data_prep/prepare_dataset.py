"""Build a prepared dataset from an audio folder: the same command as `refrain-prepare`.

python data_prep/prepare_dataset.py --source acestep --input data/ --output datasets/mine
"""

from __future__ import annotations

import sys

from refrain.cli.prepare import main

if __name__ == "__main__":
    sys.exit(main())
