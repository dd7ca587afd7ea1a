"""retake: a variation of a text2music song, its noise mixed with new noise at a variance."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError
from refrain.sampling.engine import SamplingEngine
from refrain.sampling.modes.base import register_mode
from refrain.sampling.modes.text2music import text2music_batch
from refrain.sampling.options import SamplerOptions
from refrain.sampling.sidecar import check_sidecar, read_sidecar
from refrain.sampling.song import SongResult


def _flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source_sidecar", type=Path, required=True, help="sidecar of a text2music song")
    parser.add_argument("--variance", type=float, default=0.5, help="0 = the same song, 1 = fresh noise")
    parser.add_argument("--seed", type=int, help="seed of the new noise (default: random, recorded)")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    return {"source": args.source_sidecar, "variance": args.variance, "seed": args.seed}


@register_mode(
    "retake",
    "a variation of a text2music song (its sidecar) at a variance in [0, 1]",
    add_flags=_flags,
    flag_params=_params,
    source=False,
    sampler=False,
)
def retake(
    engine: SamplingEngine,
    source: Mapping[str, Any] | str | Path,
    variance: float = 0.5,
    *,
    seed: int | None = None,
) -> SongResult:
    """A variation of a text2music song given by its sidecar: cos/sin mix of its noise with new noise
    from ``seed`` (variance 0 gives the song back exactly). Options and lyrics are the source's."""
    origin = read_sidecar(source) if isinstance(source, str | Path) else dict(source)
    check_sidecar(origin, "retake source")
    if origin["mode"] != "text2music":
        raise RefrainInputError(
            "retake source", f"is a {origin['mode']} song", "retake the sidecar of a text2music song"
        )
    origin = {
        k: origin[k] for k in ("format", "version", "mode", "params", "options", "batch") if k in origin
    }
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    batch = origin.get("batch") or {"index": 0, "requests": [origin["params"]]}
    index = int(batch["index"])
    options = SamplerOptions.from_dict(origin["options"])
    song = text2music_batch(engine, batch["requests"], options, (index, variance, seed))[index]
    song.sidecar.update(mode="retake", params={"source": origin, "variance": variance, "seed": seed})
    song.sidecar.pop("batch", None)
    return song
