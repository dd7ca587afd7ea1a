"""``python -m refrain.cli.diffrhythm sample``: text2music with a DiffRhythm bundle, the release's way.

Inputs are DiffRhythm's own: a 512-d style vector (``style.pt`` / ``.npy``, e.g. MuQ-MuLan's embedding of
a reference clip or a prompt), lyric token lines with start times (an ``lrc.pt`` dict ``{"time", "lrc"}``
as in its prepared data; none = instrumental) and a negative style vector for CFG
(``v_c + cfg (v_c - v_neg)``; none = the zero vector the model was trained to drop the style to).
Sampling is refrain's: seeded noise drawn like the release's, Euler over the backbone's preset grid.
Writes the audio (decoded by the bundle's VAE) and the latent beside it (``.latent.safetensors``).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from refrain.errors import RefrainInputError


def read_vector(path: str | Path, what: str) -> Tensor:
    """A 512-d float vector from ``.npy`` (no pickles) or ``.pt`` (weights_only)."""
    from refrain.models.backbones.diffrhythm_prompt import read_style_vector

    return read_style_vector(path, what)


def read_lyrics(path: str | Path | None) -> tuple[list[float], list[list[int]]]:
    if path is None:
        return [], []
    raw = torch.load(path, weights_only=True) if Path(path).is_file() else None
    if not isinstance(raw, dict) or "time" not in raw or "lrc" not in raw:
        raise RefrainInputError(
            path, "is not a lyrics file {'time': [...], 'lrc': [[ids], ...]}", "pass an lrc.pt"
        )
    return [float(t) for t in raw["time"]], [[int(i) for i in line] for line in raw["lrc"]]


def sample_song(args: argparse.Namespace) -> Path:
    from refrain.bundles.dit import open_dit_bundle
    from refrain.bundles.vae import load_vae_bundle
    from refrain.models.backbone import backbone_of, spec_of
    from refrain.models.backbones.diffrhythm import DiffRhythm
    from refrain.models.backbones.diffrhythm_conditioning import DiffRhythmConditioning
    from refrain.models.backbones.diffrhythm_lyrics import lines_in_window, place_lyrics
    from refrain.sampling.options import SamplerOptions
    from refrain.sampling.solvers import sample

    bundle = open_dit_bundle(args.bundle)
    model = bundle.build_model()
    if not isinstance(model, DiffRhythm):
        raise RefrainInputError(
            args.bundle, f"holds a {type(model).__name__}, not DiffRhythm", "use refrain-infer"
        )
    if args.adapter:  # a LoRA trained on this bundle (experiment=diffrhythm_lora): PEFT folder, safetensors
        from peft import PeftModel

        from refrain.lora.adapters import read_adapter_spec

        read_adapter_spec(
            args.adapter
        )  # a missing or foreign folder is a one-line error, not PEFT's traceback
        model = PeftModel.from_pretrained(model, args.adapter).eval()
    vae = load_vae_bundle(bundle.vae_path, verify=False).model
    window = int(backbone_of(model).max_frames)
    frames = min(window, max(1, math.ceil(args.seconds * vae.frame_rate)))
    times, lines = read_lyrics(args.lyrics)
    ids = place_lyrics(lines_in_window(times, lines, 0.0, window), window)[:frames]
    style = read_vector(args.style, "style")[None]
    negative = read_vector(args.negative_style, "negative style")[None] if args.negative_style else None
    cond = DiffRhythmConditioning(style, ids[None], duration=torch.tensor([frames / window]))
    defaults = dict(spec_of(model).sampler_defaults)
    if args.steps:
        defaults.update(steps=args.steps, sigma_min=1.0 / args.steps)
    defaults["guidance_scale"] = args.cfg + 1.0  # refrain's CFG v_u + w (v_c - v_u) with w = cfg + 1
    options = SamplerOptions(**defaults, seed=args.seed)
    with torch.no_grad():
        latent = sample(
            options.guided(model, replace(cond, negative_style=negative)),
            backbone_of(model).noise(args.seed, frames),
            options.sigmas(),
            options.solver,
        )
        audio = vae.decode_chunked(latent, output_device="cpu")[0]
    import soundfile
    from safetensors.torch import save_file

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(out, audio.T.numpy(), vae.sample_rate)
    save_file({"latent": latent[0].contiguous()}, str(out.with_suffix(".latent.safetensors")))
    print(
        f"wrote {out} ({audio.shape[-1] / vae.sample_rate:.2f} s, {frames} latent frames, "
        f"{options.steps} Euler steps, CFG {args.cfg} with {'negative' if negative is not None else 'zero'} style)"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m refrain.cli.diffrhythm", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="text2music from a DiffRhythm bundle (refrain-export --kind dit)")
    s.add_argument("--bundle", required=True, help="the exported DiffRhythm bundle")
    s.add_argument("--style", required=True, help="512-d style vector (.pt or .npy)")
    s.add_argument(
        "--lyrics", default=None, help="DiffRhythm lyric lines (lrc.pt: {'time', 'lrc'}); none = instrumental"
    )
    s.add_argument("--adapter", default=None, help="a LoRA adapter folder trained on this bundle")
    s.add_argument("--negative_style", default=None, help="512-d negative style vector for CFG")
    s.add_argument("--seconds", type=float, default=95.0, help="length (capped at the model's window)")
    s.add_argument(
        "--cfg", type=float, default=4.0, help="DiffRhythm's cfg_strength (v_c + cfg (v_c - v_neg))"
    )
    s.add_argument(
        "--steps", type=int, default=0, help="Euler steps; 0 = the release's (31 on its 32-point grid)"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--output", required=True, help="audio file to write (.wav/.flac)")
    lrc = sub.add_parser(
        "lrc", help="print an lrc.pt as the token-id LRC text refrain-infer's --lyrics reads"
    )
    lrc.add_argument("lyrics", help="DiffRhythm lyric lines (lrc.pt: {'time', 'lrc'})")
    args = parser.parse_args(argv)
    try:
        if args.command == "lrc":
            from refrain.models.backbones.diffrhythm_prompt import lrc_text

            times, lines = read_lyrics(args.lyrics)
            print(lrc_text({"time": times, "lrc": lines}))
            return 0
        sample_song(args)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
