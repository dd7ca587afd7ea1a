"""`refrain-demo` / `make demo`: the whole pipeline on the embedded corpus, on CPU, in minutes.

Each stage is a command a user would run by hand; the demo only chains them with small settings:
prepare the immich-memories-music corpus into a dataset (and print its report), train the tiny VAE
and export its bundle, encode the dataset's conditioning cache (REPA on two tiny random teachers),
train the tiny DiT, export it, sample two songs from two prompts, and print whether the models learnt
the corpus's time structure (figures next to the corpus's own, and one PNG: original / VAE / DiT).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from refrain.errors import RefrainInputError
from refrain.text.vocab import VOCAB_FILE

if TYPE_CHECKING:
    from refrain.sampling.options import SamplerOptions


def stage_prepare(out: Path) -> None:
    """Build the HF dataset (and its report) from the embedded corpus."""
    from refrain.cli.prepare import main as prepare_main

    code = prepare_main(["--source", "embedded", "--output", str(out / "dataset")])
    if code:
        raise SystemExit(code)


def _train(experiment: str, out: Path, *overrides: str) -> Path:
    """Compose a recipe exactly as trainer.py does and fit it; returns the last checkpoint."""
    from refrain.config import compose_config
    from refrain.training.run import train

    cfg = compose_config([f"experiment={experiment}", f"dataset_path={out / 'dataset'}", *overrides])
    result = train(cfg)
    if result.last_checkpoint is None or not result.last_checkpoint.is_file():
        raise RefrainInputError(cfg.run_dir, "the run wrote no checkpoint", "see the log above")
    print(f"run folder: {result.run_dir}  last checkpoint: {result.last_checkpoint}")
    return result.last_checkpoint


def stage_vae(out: Path) -> None:
    """Train the demo VAE (experiment=demo_vae) for a few CPU minutes, with plots every 500 steps."""
    # --torch_compile: the VAE's Snake activations compiled, ~1.3x a CPU step for ~15 s of compiling
    # (bench/bench_vae_step.py); where nothing can compile, the run says so in one line and stays eager.
    _train("demo_vae", out, f"run_dir={out / 'vae'}", "torch_compile=true")


def stage_export_vae(out: Path) -> None:
    """Export the VAE checkpoint (EMA weights) to a bundle that loads without Lightning."""
    from refrain.bundles.export import export_vae

    bundle = export_vae(out / "vae" / "checkpoints" / "last.ckpt", out / "vae_bundle", overwrite=True)
    print(f"VAE bundle: {bundle}")


def stage_encode(out: Path) -> None:
    """Cache VAE latents, style embeddings and (tiny, random) REPA teacher features once."""
    from refrain.cli.encode import main as encode_main
    from refrain.models.teachers import create_random_hubert

    teachers = out / "teachers"
    for name in ("mert", "mhubert"):
        if not (teachers / name / "config.json").is_file():
            create_random_hubert(teachers / name)
    code = encode_main(
        [
            "--dataset_path",
            str(out / "dataset"),
            "--vae_bundle",
            str(out / "vae_bundle"),
            "--repa",
            "tiny_random",
            "--repa_set",
            f"teacher_root={teachers}",
            "--num_workers",
            "1",
            "--torch_compile",  # the VAE's Snakes compiled: 1.6x its encode here for ~5 s of compiling
        ]
    )
    if code:
        raise SystemExit(code)


def stage_dit(out: Path) -> None:
    """Train the tiny DiT with flow matching + REPA from the cache."""
    _train(
        "demo_dit",
        out,
        f"run_dir={out / 'dit'}",
        f"vae_bundle={out / 'vae_bundle'}",
        f"repa.teacher_root={out / 'teachers'}",
    )


def stage_export_dit(out: Path) -> None:
    """Export the DiT checkpoint (EMA weights + VAE + vocabulary + text-encoder reference) to a bundle."""
    from refrain.bundles.export import export_dit

    bundle = export_dit(
        out / "dit" / "checkpoints" / "last.ckpt",
        out / "dit_bundle",
        overwrite=True,
        vae_bundle=out / "vae_bundle",
        phoneme_vocab=out / "dataset" / VOCAB_FILE,
    )
    print(f"DiT bundle: {bundle}")


# Two tag sets of the corpus at opposite ends: the songs they give must differ. Each set names songs that
# move over any 20 s (loudness std per 20 s window: calm 1.7-4.1 dB over three songs, the energetic E minor
# set's one song 2.7-3.0 dB). The corpus's "energetic, electronic, 150 bpm, G minor" song opens with 20 s
# that vary 0.75 dB, and a demo DiT that learned it gives songs as steady (1.0-1.3 dB; README, issue 19).
PROMPTS = {
    "calm": "calm, acoustic, 68 bpm, C major",
    "energetic": "energetic, electronic, 150 bpm, E minor",
}
SONG_SECONDS = 20.0


def _options() -> SamplerOptions:
    from refrain.sampling.options import SamplerOptions

    # APG at 3: on every demo DiT checked it moved the energetic song (the one nearest its target) more than
    # CFG 3 over the same seeds (README, issue 19: the figures of each). 20 Euler steps, not 30: on the
    # demo DiT the songs' loudness varies more the fewer the steps (seed 42's calm song 1.46 / 1.50 / 1.55 dB
    # at 30 / 24 / 20 steps, 0.1 dB up on every seed and prompt at 20), and a song takes 2/3 of the time.
    return SamplerOptions(steps=20, guidance="apg", guidance_scale=3.0, seed=42)


def stage_sample(out: Path) -> None:
    """Generate one song per demo prompt from the bundle just trained, each with its spectrogram PNG."""
    from refrain.sampling.pipeline import Pipeline

    pipeline = Pipeline.from_bundle(out / "dit_bundle")
    for name, prompt in PROMPTS.items():
        song = pipeline.text2music(prompt, lyrics="", duration=SONG_SECONDS, options=_options())
        path = song.save(out / f"song_{name}.flac", spectrogram=True)
        print(
            f"song ({prompt}): {path} (+ {path.with_suffix('.json').name}, {path.with_suffix('.png').name})"
        )


def stage_figures(out: Path) -> None:
    """Print whether the models learnt time structure (refrain.eval.demo_figures) and draw demo.png."""
    from refrain.cli.demo_report import report

    report(out, PROMPTS, _options())


STAGES: dict[str, Callable[[Path], None]] = {
    "prepare": stage_prepare,
    "vae": stage_vae,
    "export_vae": stage_export_vae,
    "encode": stage_encode,
    "dit": stage_dit,
    "export_dit": stage_export_dit,
    "sample": stage_sample,
    "figures": stage_figures,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refrain-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("exps/demo"), help="where every stage writes")
    parser.add_argument(
        "--stages", default=",".join(STAGES), help=f"comma-separated subset of: {', '.join(STAGES)}"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    wanted = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        print(
            f"error: --stages {','.join(unknown)}: unknown stage. Fix: use {', '.join(STAGES)}",
            file=sys.stderr,
        )
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        started = time.perf_counter()
        print(f"\n=== refrain demo: {name} ===", flush=True)
        try:
            STAGES[name](args.output)
        except RefrainInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(f"=== {name} done in {time.perf_counter() - started:.1f} s ===", flush=True)
    if (args.output / "dit_bundle").is_dir():
        # The app's form starts at 30 steps, APG 15, seed 0: on the demo DiT its songs vary about 0.1 dB
        # less over time (calm 1.52-2.12, energetic 1.58-2.28 dB over seeds 42, 1-4).
        options = _options()
        print(f"\nopen the app on the demo bundle:  refrain-app --bundle {args.output / 'dit_bundle'}")
        print(
            f"  the demo's songs used steps {options.steps}, guidance {options.guidance} "
            f"{options.guidance_scale:g}, seed {options.seed}: set them in its form to hear the same"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
