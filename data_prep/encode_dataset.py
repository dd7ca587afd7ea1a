"""Encode a prepared dataset into the DiT conditioning cache: the same command as `refrain-encode`.

python data_prep/encode_dataset.py --dataset_path datasets/mine --vae_bundle exps/vae/bundle --repa mert_mhubert
"""

from __future__ import annotations

import sys

from refrain.cli.encode import main

if __name__ == "__main__":
    sys.exit(main())
