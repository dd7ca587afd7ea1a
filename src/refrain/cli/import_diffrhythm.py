"""``refrain-import-diffrhythm``: move DiffRhythm's prepared training data (train.scp) into refrain, no re-encoding.

Reads ``utt|lrc.pt|latent.pt|style.pt`` lines (paths absolute or relative to the scp's folder) with
``torch.load(weights_only=True)``, writes one safetensors entry per song and an ``index.json`` into a new
folder, and names every line it skips and why. Train on the folder with ``data=diffrhythm``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from refrain.data.diffrhythm import import_diffrhythm
from refrain.errors import RefrainInputError
from refrain.models.backbones.diffrhythm_lyrics import HOP, SAMPLE_RATE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="refrain-import-diffrhythm", description=__doc__.splitlines()[0])
    parser.add_argument("--scp", required=True, help="DiffRhythm's train.scp (utt|lrc.pt|latent.pt|style.pt)")
    parser.add_argument("--output", required=True, help="a new folder for the imported dataset")
    parser.add_argument("--min_frames", type=int, default=1, help="skip songs with fewer latent frames")
    args = parser.parse_args(argv)
    try:
        result = import_diffrhythm(args.scp, args.output, args.min_frames)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    frames = sum(entry["frames"] for entry in result.imported)
    print(
        f"imported {len(result.imported)} songs ({frames} latent frames, {frames * HOP / SAMPLE_RATE:.1f} s) "
        f"into {result.out_dir}"
    )
    for skip in result.skipped:
        print(f"skipped {skip['line']}: {skip['reason']}")
    if result.skipped:
        print(f"{len(result.skipped)} lines skipped (listed in {result.out_dir / 'index.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
