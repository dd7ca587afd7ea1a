"""`refrain-encode` end to end: the real conf/repa and conf/data files, resuming, one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import DatasetDict
from hydra.utils import instantiate
from omegaconf import OmegaConf

from refrain.bundles.vae import save_vae_bundle
from refrain.cli.encode import load_repa_teachers, main
from refrain.config import compose_config
from refrain.data.cache import read_index
from refrain.data.prepare import save_dataset_atomic
from refrain.data.schema import empty_recaption, records_to_dataset
from refrain.models.compile import is_compiled
from refrain.models.teachers import create_random_hubert
from refrain.models.vae.oobleck import build_oobleck_vae

CONF = Path(__file__).resolve().parents[2] / "conf"
RATE = 8000


def _record(folder: Path, index: int, split: str) -> dict:
    path = folder / f"song{index}.flac"
    t = np.arange(RATE) / RATE
    sf.write(path, np.stack([np.sin(2 * np.pi * (200 + 50 * index) * t)] * 2, axis=1) * 0.3, RATE)
    return {
        "keys": f"song{index}",
        "filename": str(path),
        "tags": ["ambient", "pads"],
        "speaker_emb_path": "",
        "norm_lyrics": "",
        "recaption": empty_recaption(),
        "lrc": [],
        "lrc_source": "none",
        "phoneme_ids": [],
        "duration": 1.0,
        "sample_rate": RATE,
        "channels": 2,
        "language": "en",
        "content_hash": f"{index:064x}",
        "split": split,
    }


@pytest.fixture
def setup_dirs(tmp_path: Path) -> dict[str, Path]:
    """A 3-song dataset, a tiny VAE bundle and conf/repa/tiny_random's two random teachers."""
    data = tmp_path / "ds"
    data.mkdir()
    records = [_record(data, i, "train") for i in range(2)] + [_record(data, 2, "validation")]
    splits = DatasetDict(
        {"train": records_to_dataset(records[:2]), "validation": records_to_dataset(records[2:])}
    )
    save_dataset_atomic(splits, data)
    vae = build_oobleck_vae(
        sample_rate=RATE,
        downsampling_ratios=(2, 5, 8),
        channel_multiples=(1, 2, 2),
        encoder_hidden_size=8,
        decoder_channels=8,
        latent_channels=4,
    )
    bundle = save_vae_bundle(tmp_path / "bundle", vae.autoencoder, {})
    teachers = tmp_path / "teachers"
    for name in ("mert", "mhubert"):  # tiny_random.yaml says feature_dim 32
        create_random_hubert(teachers / name, hidden_size=32, num_layers=2)
    return {"data": data, "bundle": bundle, "teachers": teachers}


def test_encode_resume_and_train_config_agree(
    setup_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--dataset_path",
        str(setup_dirs["data"]),
        "--vae_bundle",
        str(setup_dirs["bundle"]),
        "--repa",
        "tiny_random",
        f"repa.teacher_root={setup_dirs['teachers']}",
        "--num_workers",
        "1",
        "--device",
        "cpu",
        "--no_progress",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "records: 3 (encoded 3, reused 0, redone 0, failed 0)" in out and "MB per minute" in out
    (folder,) = (setup_dirs["data"] / "cache").iterdir()
    assert len(list(folder.glob("*.safetensors"))) == 3
    assert set(read_index(folder)["teachers"]) == {"mert", "mhubert"}
    argv[argv.index(f"repa.teacher_root={setup_dirs['teachers']}")] = "--repa_set"
    argv.insert(argv.index("--repa_set") + 1, f"teacher_root={setup_dirs['teachers']}")
    assert main(argv) == 0  # the same teachers through --repa_set: the same cache, nothing to do
    assert "(encoded 0, reused 3, redone 0, failed 0)" in capsys.readouterr().out

    # Training composed by trainer.py's config code (data=latents, repa=tiny_random) finds that very cache.
    cfg = compose_config(
        [
            "data=latents",
            "repa=tiny_random",
            f"repa.teacher_root={setup_dirs['teachers']}",
            f"dataset_path={setup_dirs['data']}",
            f"vae_bundle={setup_dirs['bundle']}",
            "num_workers=0",
            "seed=0",
        ]
    )
    module = instantiate(cfg.data)
    module.setup("fit")
    assert module.cache_folder == folder and module.cached_records == 3
    batch = next(iter(module.val_dataloader()))
    assert set(batch["teacher_features"]) == {"mert", "mhubert"} and batch["lyrics"].abs().sum() == 0


def test_bad_input_is_one_line_and_exit_2(
    setup_dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = setup_dirs["data"].parent / "no_bundle"
    assert (
        main(["--dataset_path", str(setup_dirs["data"]), "--vae_bundle", str(missing), "--no_progress"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {missing}: not a refrain bundle") and "Fix:" in err and "\n" not in err
    assert (
        main(
            [
                "--dataset_path",
                str(setup_dirs["data"]),
                "--vae_bundle",
                str(setup_dirs["bundle"]),
                "--repa",
                "nope",
            ]
        )
        == 2
    )
    assert "neither a file nor a conf/repa option" in capsys.readouterr().err
    assert main(["--dataset_path", "x", "--vae_bundle", "y", "--repa", "tiny_random", "teacher_root=T"]) == 2
    assert "not a repa.KEY=VALUE override" in capsys.readouterr().err


def test_repa_teachers_are_composed_as_trainer_py_composes_them(tmp_path: Path) -> None:
    from refrain.data.conditioning_encoder import as_teacher_specs

    trained = compose_config(["experiment=demo_dit", f"repa.teacher_root={tmp_path}"])
    expected = as_teacher_specs(OmegaConf.to_container(trained.repa.teachers, resolve=True))
    assert load_repa_teachers("tiny_random", [f"teacher_root={tmp_path}"]) == expected
    assert expected["mert"].checkpoint_dir == str(tmp_path / "mert")
    copy = tmp_path / "my_repa.yaml"
    copy.write_text((CONF / "repa" / "tiny_random.yaml").read_text())
    assert load_repa_teachers(str(copy), [f"teacher_root={tmp_path}"]) == expected  # a file outside conf/
    default_root = load_repa_teachers("tiny_random", [])["mert"].checkpoint_dir
    assert default_root == "exps/refrain/random_teachers/mert"  # ${run_dir} as trainer.py's default


@pytest.mark.slow
def test_torch_compile_writes_the_eager_cache_within_float_tolerance(
    setup_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers.models.autoencoders.autoencoder_oobleck import Snake1d
    from safetensors.torch import load_file

    from refrain.models import compile as compile_module

    if compile_module.compile_unavailable() is not None:
        pytest.skip(f"torch.compile cannot run here: {compile_module.compile_unavailable()}")
    compiled_models: list[torch.nn.Module] = []
    real = compile_module.compile_blocks

    def spy(model: torch.nn.Module, *args: object, **kwargs: object) -> str | None:
        compiled_models.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(compile_module, "compile_blocks", spy)
    argv = ["--dataset_path", str(setup_dirs["data"]), "--vae_bundle", str(setup_dirs["bundle"])]
    argv += ["--num_workers", "0", "--device", "cpu", "--no_progress"]
    assert main(argv) == 0 and not compiled_models
    (folder,) = (setup_dirs["data"] / "cache").iterdir()
    eager = {path.name: load_file(path) for path in folder.glob("*.safetensors")}
    shutil.rmtree(folder)

    assert main([*argv, "--torch_compile"]) == 0
    (vae,) = compiled_models
    assert all(is_compiled(m) for m in vae.modules() if isinstance(m, Snake1d))
    (again,) = (setup_dirs["data"] / "cache").iterdir()
    assert again.name == folder.name and sorted(p.name for p in again.glob("*.safetensors")) == sorted(eager)
    for name, tensors in eager.items():
        got = load_file(again / name)
        assert set(got) == set(tensors)
        for key, want in tensors.items():
            torch.testing.assert_close(got[key], want, atol=1e-5, rtol=1e-5)
