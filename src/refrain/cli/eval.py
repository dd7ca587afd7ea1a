"""``refrain-eval``: measure what a run learned.

    refrain-eval vae --bundle B --dataset_path D [--bundle OTHER] [--out DIR]
    refrain-eval songs --generated DIR --reference DIR_or_dataset [--prompts FILE]
                       [--mert DIR] [--clap DIR] [--whisper DIR] [--out DIR]
    refrain-eval bundle --bundle B --prompts FILE [--lora A[:SCALE] ...] [--dataset_path D] [model flags]
    refrain-eval compare A/eval.json B/eval.json

``vae`` writes ``eval.json``, ``eval.md`` and ``vae_mp3.png`` (each metric against the MP3 condition, one
line per system) into ``--out`` (default ``<first bundle>/eval``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError

VAE_PLOT_METRICS = ("stoi", "pesq", "mcd", "si_sdr", "lsd", "hf_energy_db")
SONG_PLOT_METRICS = ("clap", "wer", "per", "loudness_lufs", "loudness_std_db", "centroid_variation")


def _bundle_name(path: Path, taken: set[str]) -> str:
    name = path.name or str(path)
    while name in taken:
        name = f"{name}'"
    taken.add(name)
    return name


def run_vae(args: argparse.Namespace) -> Path:
    """Evaluate one or more VAE bundles on the held-out songs; returns the report folder."""
    from refrain.bundles.vae import load_vae_bundle
    from refrain.eval.report import markdown_table, plot_metric_curves, write_report
    from refrain.eval.vae_eval import evaluate_vae, heldout_clips, parse_condition

    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    for condition in conditions:
        parse_condition(condition)  # bad names fail before any model loads
    taken: set[str] = set()
    bundles = {_bundle_name(Path(p), taken): load_vae_bundle(p, device=args.device) for p in args.bundle}
    rate = next(iter(bundles.values())).model.sample_rate
    clips = heldout_clips(args.dataset_path, rate, args.seconds, args.max_clips)
    started = time.perf_counter()
    table = evaluate_vae(bundles, clips, rate, conditions, progress=None if args.quiet else _progress)
    seconds = time.perf_counter() - started
    rows = table.means()
    out = Path(args.out) if args.out else Path(args.bundle[0]) / "eval"
    report: dict[str, Any] = {
        "kind": "vae",
        "inputs": {
            "bundles": {
                name: {"path": str(b.path), "bundle_hash": b.manifest.get("bundle_hash")}
                for name, b in bundles.items()
            },
            "dataset_path": str(args.dataset_path),
            "clips": [{"key": c.key, "path": c.path} for c in clips],
            "seconds": args.seconds,
            "sample_rate": rate,
            "conditions": conditions,
        },
        "rows": rows,
        "per_clip": table.per_clip,
        "timing": {
            "seconds": seconds,
            "audio_seconds_per_second": len(clips) * args.seconds * len(conditions) / max(seconds, 1e-9),
        },
    }
    markdown = (
        f"# VAE reconstruction ({len(clips)} held-out clips of {args.seconds:g} s at {rate} Hz)\n\n"
        "`input` is the degraded input itself (the do-nothing baseline). Higher is better for stoi, pesq, "
        "si_sdr; lower for mcd, mrstft, lsd, hf_energy_db.\n\n" + markdown_table(rows)
    )
    write_report(out, report, markdown)
    plot_metric_curves(
        rows, VAE_PLOT_METRICS, "condition", out / "vae_mp3.png", "VAE: clean and MP3 -> clean"
    )
    print(markdown)
    print(f"eval: {out / 'eval.json'}, {out / 'eval.md'}, {out / 'vae_mp3.png'} ({seconds:.1f} s)")
    return out


def build_songs_evaluator(args: argparse.Namespace) -> Any:
    """The configured embedding, CLAP and ASR models from their local folders (none is required)."""
    from refrain.eval.asr import WhisperTranscriber
    from refrain.eval.embedders import EmbedderSpec, build_embedder
    from refrain.eval.embedding_cache import EmbeddingCache
    from refrain.eval.songs_eval import SongsEvaluator

    embedders = []
    if args.mert:
        spec = EmbedderSpec(
            "mert",
            "ssl",
            args.mert,
            args.mert_layer,
            args.mert_sample_rate,
            normalize=True,
            trust_remote_code=args.trust_remote_code,
        )
        embedders.append(build_embedder(spec, args.device))
    clap = build_embedder(EmbedderSpec("clap", "clap", args.clap), args.device) if args.clap else None
    if clap is not None:
        embedders.append(clap)
    asr = WhisperTranscriber(args.whisper, args.device, args.language) if args.whisper else None
    return SongsEvaluator(
        embedders,
        clap,
        asr,
        EmbeddingCache(args.cache_dir),
        args.max_seconds,
        args.language,
        None if args.quiet else _progress,
    )


def run_songs(args: argparse.Namespace) -> Path:
    """FAD, CLAP score, WER/PER and music statistics of a generated set against a reference set."""
    from refrain.eval.report import markdown_table, plot_metric_bars, write_report
    from refrain.eval.songs_eval import read_prompts_file, song_set, summarise

    prompts = read_prompts_file(args.prompts) if args.prompts else None
    generated, reference = song_set(args.generated, prompts), song_set(args.reference)
    evaluator = build_songs_evaluator(args)
    started = time.perf_counter()
    fad = evaluator.fad(generated, reference) if evaluator.embedders else {}
    per_song = {s.name: evaluator.per_song(s) for s in (generated, reference)}
    seconds = time.perf_counter() - started
    rows = [
        {**summarise(per_song[generated.name], "generated"), **fad},
        summarise(per_song[reference.name], "reference"),
    ]
    out = Path(args.out) if args.out else Path(args.generated) / "eval"
    models = {e.name: e.fingerprint for e in evaluator.embedders}
    if evaluator.asr is not None:
        models["whisper"] = evaluator.asr.fingerprint
    report = {
        "kind": "songs",
        "inputs": {
            "generated": str(args.generated),
            "reference": str(args.reference),
            "prompts": args.prompts,
            "max_seconds": args.max_seconds,
            "models": models,
        },
        "rows": rows,
        "per_song": per_song,
        "timing": {
            "seconds": seconds,
            "cache_hits": evaluator.cache.hits,
            "cache_misses": evaluator.cache.misses,
        },
    }
    markdown = (
        f"# Songs: {len(generated.songs)} generated against {len(reference.songs)} reference\n\n"
        "fad_* and wer/per: lower is better; clap: higher is better; loudness and centroid figures describe "
        "the sets (compare generated with reference).\n\n" + markdown_table(rows)
    )
    write_report(out, report, markdown)
    plot_metric_bars(rows, SONG_PLOT_METRICS + tuple(fad), "set", out / "songs.png", "Generated vs reference")
    print(markdown)
    print(
        f"eval: {out / 'eval.json'}, {out / 'eval.md'}, {out / 'songs.png'} ({seconds:.1f} s, embedding cache "
        f"{evaluator.cache.hits} hits / {evaluator.cache.misses} computed)"
    )
    return out


def generate(
    bundle: str | Path, prompts: str | Path, out_dir: Path, loras: Sequence[str], extra: Sequence[str]
) -> Path:
    """Sample every prompt of ``prompts`` into ``out_dir`` with ``refrain-infer`` (seeds from the file)."""
    from refrain.cli.infer import main as infer_main

    argv = [
        "text2music",
        "--bundle",
        str(bundle),
        "--prompts_file",
        str(prompts),
        "--out_dir",
        str(out_dir),
        "--no_progress",
        *[arg for lora in loras for arg in ("--lora", lora)],
        *extra,
    ]
    if infer_main(argv) != 0:
        raise RefrainInputError(out_dir, "refrain-infer failed (its message is above)", "fix that and re-run")
    return out_dir


def run_bundle(args: argparse.Namespace) -> Path:
    """Generate the prompts with fixed seeds (base, and adapted when --lora is given) and evaluate them."""
    from refrain.eval.bundle_eval import evaluate_sets, training_dataset
    from refrain.eval.report import markdown_table, plot_metric_bars, write_report
    from refrain.eval.songs_eval import folder_set, read_prompts_file, song_set

    prompts = read_prompts_file(args.prompts)
    dataset = args.dataset_path or training_dataset(args.bundle, args.lora)
    reference = song_set(dataset)
    evaluator = build_songs_evaluator(args)  # model folders fail here, before any song is generated
    out = Path(args.out) if args.out else Path(args.bundle) / "eval"
    extra = ["--steps", str(args.steps), "--device", args.device]
    sets = [folder_set(generate(args.bundle, args.prompts, out / "base", [], extra), prompts, "base")]
    if args.lora:
        sets.append(
            folder_set(
                generate(args.bundle, args.prompts, out / "adapted", args.lora, extra), prompts, "adapted"
            )
        )
    started = time.perf_counter()
    rows, per_prompt = evaluate_sets(evaluator, sets, reference)
    seconds = time.perf_counter() - started
    report = {
        "kind": "bundle",
        "inputs": {
            "bundle": str(args.bundle),
            "lora": list(args.lora),
            "prompts": str(args.prompts),
            "reference": str(dataset),
            "steps": args.steps,
            "models": {e.name: e.fingerprint for e in evaluator.embedders},
        },
        "rows": rows,
        "per_prompt": per_prompt,
        "timing": {"seconds": seconds},
    }
    markdown = (
        f"# Bundle {Path(args.bundle).name}: {len(prompts)} prompts against {len(reference.songs)} training songs\n\n"
        + (
            "`adapted` is the bundle with " + ", ".join(args.lora) + "; same prompts and seeds as `base`.\n\n"
            if args.lora
            else ""
        )
        + markdown_table(rows)
        + "\n## Per prompt\n\n"
        + markdown_table([row for rows_ in per_prompt.values() for row in rows_])
    )
    write_report(out, report, markdown)
    plot_metric_bars(
        rows,
        ("clap", *sorted(k for k in rows[0] if k.startswith("fad_"))),
        "set",
        out / "overall.png",
        "Base vs adapted: overall",
    )
    prompt_rows = [row for rows_ in per_prompt.values() for row in rows_]
    metrics = ("clap", *sorted(k for k in prompt_rows[0] if k.startswith("dist_")))
    plot_metric_bars(prompt_rows, metrics, "set", out / "per_prompt.png", "Base vs adapted: per prompt")
    print(markdown)
    print(f"eval: {out / 'eval.json'}, {out / 'eval.md'}, overall.png, per_prompt.png (songs under {out})")
    return out


def run_compare(args: argparse.Namespace) -> None:
    """Print B - A per row and metric with the verdict (+ better, - worse, = equal)."""
    from refrain.eval.report import compare_reports, markdown_table, read_report

    rows = compare_reports(read_report(args.a), read_report(args.b))
    if not rows:
        raise RefrainInputError(
            args.b, "shares no rows with " + str(args.a), "compare reports of the same kind"
        )
    print(markdown_table(rows, ["row", "metric", "A", "B", "B-A", "better"]), end="")
    better = sum(r["better"] == "+" for r in rows)
    worse = sum(r["better"] == "-" for r in rows)
    print(
        f"B better in {better}, worse in {worse}, equal in {len(rows) - better - worse} of {len(rows)} figures"
    )


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """The evaluation models (each optional, each a local folder) and their settings."""
    parser.add_argument("--mert", default=None, help="local MERT (or HuBERT-style) folder for FAD")
    parser.add_argument(
        "--mert_layer", type=int, default=-1, help="hidden layer whose time mean is the embedding"
    )
    parser.add_argument(
        "--trust_remote_code",
        action="store_true",
        help="run the modelling code shipped in the --mert folder (MERT needs it; review it first)",
    )
    parser.add_argument("--mert_sample_rate", type=int, default=24000, help="the model's input rate")
    parser.add_argument("--clap", default=None, help="local CLAP folder: FAD and the text-audio score")
    parser.add_argument("--whisper", default=None, help="local Whisper folder: lyric WER and PER")
    parser.add_argument("--language", default=None, help="lyrics language for ASR and G2P (default: detect)")
    parser.add_argument("--max_seconds", type=float, default=30.0, help="audio read per song")
    parser.add_argument(
        "--cache_dir", default=None, help="embedding cache (default ~/.cache/refrain/embeddings)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refrain-eval", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    vae = sub.add_parser("vae", help="reconstruction table of VAE bundles, lossless and from MP3")
    vae.add_argument("--bundle", action="append", required=True, help="a VAE bundle (repeat to compare)")
    vae.add_argument("--dataset_path", required=True, help="a prepared dataset; its validation split is used")
    vae.add_argument("--conditions", default="clean,cbr64,cbr128,cbr320,vbr0,vbr4,vbr7")
    vae.add_argument("--seconds", type=float, default=10.0, help="window per held-out song")
    vae.add_argument("--max_clips", type=int, default=None, help="evaluate at most this many songs")
    vae.add_argument("--device", default="cpu")
    vae.add_argument("--out", default=None, help="report folder (default <first bundle>/eval)")
    vae.add_argument("--quiet", action="store_true", help="no per-clip progress lines")
    songs = sub.add_parser("songs", help="FAD, CLAP score, lyric WER/PER and statistics of a song set")
    songs.add_argument("--generated", required=True, help="folder of generated songs (with their sidecars)")
    songs.add_argument("--reference", required=True, help="folder of reference songs or a prepared dataset")
    songs.add_argument("--prompts", default=None, help="the prompts file the songs were generated from")
    _model_flags(songs)
    songs.add_argument("--out", default=None, help="report folder (default GENERATED/eval)")
    bundle = sub.add_parser(
        "bundle", help="generate a prompts file with fixed seeds and evaluate it (LoRA effect)"
    )
    bundle.add_argument("--bundle", required=True, help="a DiT bundle")
    bundle.add_argument(
        "--prompts", required=True, help="JSON lines as refrain-infer --prompts_file reads them"
    )
    bundle.add_argument(
        "--lora", action="append", default=[], metavar="ADAPTER[:SCALE]", help="adapters (repeatable)"
    )
    bundle.add_argument("--dataset_path", default=None, help="reference set (default: the training dataset)")
    bundle.add_argument("--steps", type=int, default=30, help="sampler steps")
    bundle.add_argument("--out", default=None, help="report and songs folder (default BUNDLE/eval)")
    _model_flags(bundle)
    compare = sub.add_parser("compare", help="difference table of two eval.json files")
    compare.add_argument("a", help="eval.json (or its folder) of the baseline")
    compare.add_argument("b", help="eval.json (or its folder) to compare against it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"vae": run_vae, "songs": run_songs, "bundle": run_bundle, "compare": run_compare}[args.command](args)
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
