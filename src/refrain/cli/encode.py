"""`refrain-encode`: run the frozen encoders over a prepared dataset once and cache their outputs.

    refrain-encode --dataset_path P --vae_bundle B [--text_encoder_dir D] [--repa NAME_OR_YAML]
        [repa.KEY=VALUE ...] [--repa_set KEY=VALUE ...] [--run_dir DIR] [--split train,validation] [--device auto]
        [--num_workers 2] [--tag_shuffles 4] [--latent_dtype float32] [--feature_dtype float32]
        [--teacher_rate native] [--devices N] [--num_nodes N] [--verify] [--limit N] [--shards N] [--no_progress]
        [--torch_compile] [--ace15 RELEASE [--max_frames 2048] [--ace15_timbre]]

Writes P/cache/<fingerprint>/<content_hash>.safetensors plus index.json. Re-running resumes: valid
entries are kept, corrupt or stale ones redone. Training with the same settings reads the cache.
``--shards N`` then also packs the entries into N Arrow files (P/cache/<fingerprint>/shards/, Hugging
Face ``datasets``), which training streams with ``data.loader.cache_format=shards``.

``--ace15 RELEASE`` then fills P/cache/ace15_text with the release's Qwen3 prompt states and lyric token ids
of every crop of ``--max_frames`` frames (``refrain.data.ace15_cache``), so an ACE-Step 1.5 run reads them;
``--ace15_timbre`` also each song's timbre reference (P/cache/ace15_timbre) for ``model.dit.timbre=song``.

``--devices N`` / ``--num_nodes N`` run N ranks as trainer.py does (Lightning Fabric's DDP launcher: it
starts the local processes itself, or joins the ones torchrun / srun started); each rank encodes a
disjoint share of the records and rank 0 writes the one index after gathering the others' summaries.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refrain.errors import RefrainInputError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refrain-encode",
        description="Encode a prepared dataset with the frozen VAE, text encoder and REPA teachers into "
        "a resumable, memory-mapped conditioning cache that DiT training reads.",
    )
    parser.add_argument("--dataset_path", type=Path, required=True, help="a folder made by refrain-prepare")
    parser.add_argument(
        "--vae_bundle", type=Path, required=True, help="an exported VAE bundle (refrain-export)"
    )
    parser.add_argument(
        "--text_encoder_dir",
        default=None,
        help="a local Hugging Face encoder folder (default: bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--repa",
        default=None,
        help="REPA teachers: a conf/repa option (mert_mhubert, tiny_random) or a YAML file",
    )
    parser.add_argument(
        "--repa_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key of the REPA config, e.g. mert_dir=/ckpt/MERT-v1-330M (repeatable)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="repa.KEY=VALUE",
        help="Hydra-style overrides of the REPA config, as trainer.py takes them (repa.teacher_root=T)",
    )
    parser.add_argument(
        "--run_dir", default=None, help="value of ${run_dir} inside the REPA config (default: trainer.py's)"
    )
    parser.add_argument("--split", default="train,validation", help="comma-separated splits to encode")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--num_workers", type=int, default=2, help="processes decoding audio ahead of the encoders"
    )
    parser.add_argument("--tag_shuffles", type=int, default=4, help="fixed tag shuffles stored per record")
    parser.add_argument("--latent_dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument(
        "--feature_dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16", "int8"),
        help="storage of teacher features and style embeddings (float16 halves the cache; int8: teacher "
        "features as 8-bit codes with per-channel, per-64-frame float scales, style embeddings in bfloat16)",
    )
    parser.add_argument("--text_max_length", type=int, default=256, help="text encoder truncation in tokens")
    parser.add_argument(
        "--teacher_rate",
        default="native",
        choices=("native", "latent"),
        help="store teacher features at their own frame rate, or average-pooled to the latent frame rate",
    )
    parser.add_argument(
        "--devices",
        default=None,
        help="processes per node, as trainer.py's --devices (default: the launcher's, else 1)",
    )
    parser.add_argument(
        "--num_nodes", type=int, default=None, help="nodes, as trainer.py's (default: the launcher's, else 1)"
    )
    parser.add_argument(
        "--verify", action="store_true", help="re-hash every existing entry (reads the whole cache)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="encode only the first N records (trials, timing)"
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="N",
        help="also write the cache as N Arrow shards (train with data.loader.cache_format=shards)",
    )
    parser.add_argument(
        "--ace15",
        default=None,
        metavar="RELEASE",
        help="also fill the ACE-Step 1.5 text cache (Qwen3 prompt states, lyric token ids) from this release "
        "folder, so an ace15 run (--checkpoint_dir RELEASE) runs no Qwen3 forward",
    )
    parser.add_argument(
        "--max_frames",
        type=int,
        default=2048,
        help="with --ace15: the crop length training uses (data.max_frames); it sets the prompts' duration",
    )
    parser.add_argument(
        "--ace15_timbre",
        action="store_true",
        help="with --ace15: also cache each song's timbre reference latents (for model.dit.timbre=song)",
    )
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--torch_compile",
        action="store_true",
        help="torch.compile the VAE's Snake activations: the same latents within float tolerance, faster on a "
        "CPU (bench/bench_encode.py); eager, with a one-line note, where the platform cannot compile",
    )
    return parser


def load_repa_teachers(option: str, overrides: Sequence[str], run_dir: str | None = None) -> dict:
    """TeacherSpecs of a conf/repa option (composed by Hydra exactly as trainer.py composes it) or a YAML file.

    ``overrides`` are ``KEY=VALUE`` pairs of the repa config (``teacher_root=T``); ``run_dir`` stands for
    ``${run_dir}`` (None = trainer.py's default).
    """
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from refrain.config import compose_config, group_options, resolve_checked
    from refrain.data.conditioning_encoder import as_teacher_specs

    for item in overrides:
        if "=" not in item:
            raise RefrainInputError(
                f"--repa_set {item}", "not KEY=VALUE", "write e.g. --repa_set mert_dir=/ckpt/MERT"
            )
    path = Path(option)
    is_file = path.is_file()
    if not is_file and option not in group_options("repa"):
        raise RefrainInputError(
            "--repa",
            f"{option!r} is neither a file nor a conf/repa option",
            f"pass one of {', '.join(group_options('repa'))} or a YAML path",
        )
    base = [f"run_dir={run_dir}"] if run_dir else []
    repa_overrides = [f"repa.{item.strip()}" for item in overrides]
    if not is_file:
        cfg = compose_config([*base, f"repa={option}", *repa_overrides])
    else:  # a file outside conf/: the same root config, its repa node read from the file
        cfg = compose_config(base)
        try:
            with open_dict(cfg):
                cfg.repa = OmegaConf.load(path)
                cfg.merge_with_dotlist(repa_overrides)
        except OmegaConfBaseException as err:
            raise RefrainInputError(
                path,
                f"cannot read the REPA config ({type(err).__name__}: {err})",
                "fix the file or --repa_set",
            ) from None
    return as_teacher_specs(resolve_checked(cfg)["repa"].get("teachers"))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def launch_ranks(devices: str | None, num_nodes: int | None, device: str) -> Any:
    """A launched Lightning Fabric when more than one rank is asked for (or a launcher started us), else None.

    Fabric is the launcher the trainer uses: it spawns the local ranks itself, or joins the processes
    torchrun / srun started (their environment says so), and sets up the process group (gloo on CPUs).
    """
    from refrain.training.cluster import devices_from_env, nodes_from_env

    env_devices = devices_from_env()
    count = devices if devices is not None else (env_devices if env_devices != "auto" else 1)
    nodes = num_nodes if num_nodes is not None else nodes_from_env()
    try:
        count = int(count)
    except ValueError:
        raise RefrainInputError(
            "--devices", f"{devices!r} is not a number", "pass e.g. --devices 4"
        ) from None
    if count < 1 or nodes < 1:
        raise RefrainInputError("--devices/--num_nodes", "below 1", "pass 1 or more")
    if count * nodes == 1:
        return None
    from datetime import timedelta

    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy

    accelerator = "cpu" if device == "cpu" else ("cuda" if device.startswith("cuda") else "auto")
    # Ranks meet only at the end; a rank with longer songs may arrive hours after the others.
    fabric = Fabric(
        accelerator=accelerator,
        devices=count,
        num_nodes=nodes,
        strategy=DDPStrategy(timeout=timedelta(hours=48)),
    )
    fabric.launch()
    return fabric


def _gather(item: Any) -> list[Any]:
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, item)
    return parts


def _prefill_ace15(args: argparse.Namespace, report: Any) -> Any:
    """ACE-Step 1.5's frozen text outputs for every crop training can draw (``refrain.data.ace15_cache``)."""
    from refrain.data.ace15_cache import prefill_ace15
    from refrain.data.conditioning_encoder import vae_facts

    facts = vae_facts(args.vae_bundle)
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    rate = float(facts["sample_rate"]) / float(facts["hop_length"])  # as the DiT data module computes it
    return prefill_ace15(
        args.dataset_path,
        args.ace15,
        report.cache_dir,
        report.fingerprint,
        splits,
        args.max_frames,
        rate,
        args.ace15_timbre,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the encoder; returns the exit code (0 ok, also with skipped records; 2 bad input)."""
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from refrain.data.cache_build import build_cache
    from refrain.data.conditioning_encoder import ConditioningEncoder, EncodeSettings

    try:
        repa_set = list(args.repa_set)
        for item in args.overrides:
            if not item.startswith("repa.") or "=" not in item:
                raise RefrainInputError(
                    item, "not a repa.KEY=VALUE override", "write e.g. repa.teacher_root=DIR"
                )
            repa_set.append(item[len("repa.") :])
        if args.ace15:  # refused before the long encoding, not after it
            from refrain.models.backbones.ace15 import is_release_folder

            if not is_release_folder(args.ace15):
                raise RefrainInputError(
                    "--ace15",
                    f"{args.ace15} is not an ACE-Step 1.5 release folder in diffusers' layout",
                    "pass the folder an ace15 run gets as --checkpoint_dir (transformer/, condition_encoder/, ...)",
                )
        teachers = load_repa_teachers(args.repa, repa_set, args.run_dir) if args.repa else {}
        settings = EncodeSettings(
            args.tag_shuffles, args.latent_dtype, args.feature_dtype, args.text_max_length, args.teacher_rate
        )
        fabric = launch_ranks(args.devices, args.num_nodes, args.device)
        device = str(fabric.device) if fabric is not None else resolve_device(args.device)
        encoder = ConditioningEncoder.from_paths(
            args.vae_bundle, args.text_encoder_dir, teachers, settings, device=device
        )
        if args.torch_compile:  # not part of the cache's fingerprint: the same model, float-tolerance latents
            from refrain.models.compile import compile_blocks

            note = compile_blocks(encoder.vae)
            if note:
                print(f"note: {note}", file=sys.stderr)
        splits = [s.strip() for s in args.split.split(",") if s.strip()]
        ranks = (
            {"rank": fabric.global_rank, "world_size": fabric.world_size, "gather": _gather} if fabric else {}
        )
        report = build_cache(
            args.dataset_path,
            encoder,
            splits,
            verify=args.verify,
            progress=not args.no_progress,
            num_workers=args.num_workers,
            limit=args.limit,
            **ranks,
        )
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if fabric is not None:
        from refrain.training.cluster import release_process_group

        release_process_group()  # a live gloo/NCCL group torn down at exit can abort a finished run
        if fabric.global_rank != 0:
            return 0
    print(report.summary())
    if args.shards:
        from refrain.data.shards import write_shards

        try:
            print(write_shards(report.cache_dir, args.shards, progress=not args.no_progress).summary())
        except RefrainInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.ace15:
        try:
            print(_prefill_ace15(args, report).summary())
        except RefrainInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(
        "train with data=latents and the same vae_bundle, text_encoder_dir, repa teachers and storage "
        f"settings (they name the cache folder {report.cache_dir.name})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
