"""REPA teachers: tiny random HuBERTs saved with save_pretrained and loaded through the real local path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from refrain.errors import RefrainInputError
from refrain.models.teachers import SSLTeacher, TeacherSpec, create_random_hubert, load_teachers

CONF = Path(__file__).resolve().parents[2] / "conf" / "repa"


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_random_hubert(tmp_path_factory.mktemp("teacher") / "hubert", hidden_size=32, num_layers=2)


def mert_like(path: Path, **kw: object) -> TeacherSpec:
    args = dict(layer=1, chunk_seconds=0.25, normalize=True)
    args.update(kw)
    return TeacherSpec("mert", str(path), 24000, **args)


def test_features_shape_rate_and_frame_count(teacher_dir: Path) -> None:
    mert = SSLTeacher(mert_like(teacher_dir))
    hubert = SSLTeacher(TeacherSpec("mhubert", str(teacher_dir), 16000, layer=-1, chunk_seconds=30.0))
    assert mert.frame_rate == 75.0 and hubert.frame_rate == 50.0
    audio = torch.randn(2, 2, 28800)  # 0.6 s of stereo at 48 kHz
    for teacher, rate in ((mert, 24000), (hubert, 16000)):
        feats = teacher(audio, 48000)
        assert feats.shape == (2, teacher.num_frames(int(28800 * rate / 48000)), 32)
        assert feats.isfinite().all()
    assert abs(mert(audio, 48000).shape[1] - 0.6 * 75) <= 3  # about 75 frames per second


def test_layer_is_the_requested_hidden_state(teacher_dir: Path) -> None:
    teacher = SSLTeacher(mert_like(teacher_dir, layer=1, normalize=False, chunk_seconds=1.0))
    wav = torch.randn(1, 12000)
    direct = teacher.model(wav, output_hidden_states=True).hidden_states
    got = teacher(wav.unsqueeze(1), 24000)
    assert torch.allclose(got, direct[1], atol=1e-5)
    assert not torch.allclose(got, direct[2], atol=1e-3)


def test_long_audio_is_split_into_chunks(teacher_dir: Path) -> None:
    teacher = SSLTeacher(mert_like(teacher_dir, normalize=False))  # 0.25 s = 6000-sample chunks
    wav = torch.randn(2, 1, 6000 * 2 + 3000)
    got = teacher(wav, 24000)
    parts = [teacher(wav[..., a:b], 24000) for a, b in ((0, 6000), (6000, 12000), (12000, 15000))]
    assert torch.allclose(got, torch.cat(parts, dim=1), atol=1e-5)
    assert got.shape[1] == teacher.num_frames(15000)


def test_per_chunk_normalisation_makes_features_gain_invariant(teacher_dir: Path) -> None:
    wav = torch.randn(1, 1, 9000) * 0.1 + 0.05
    normed = SSLTeacher(mert_like(teacher_dir))
    assert torch.allclose(normed(wav, 24000), normed(wav * 4.0 - 0.3, 24000), atol=1e-4)
    raw = SSLTeacher(mert_like(teacher_dir, normalize=False))
    assert not torch.allclose(raw(wav, 24000), raw(wav * 4.0 - 0.3, 24000), atol=1e-3)


def test_stereo_is_mixed_to_mono(teacher_dir: Path) -> None:
    teacher = SSLTeacher(mert_like(teacher_dir))
    stereo = torch.randn(1, 2, 7000)
    assert torch.allclose(teacher(stereo, 24000), teacher(stereo.mean(1, keepdim=True), 24000), atol=1e-5)


def test_missing_directory_names_key_and_fix(tmp_path: Path) -> None:
    spec = TeacherSpec("mhubert", str(tmp_path / "nowhere"), 16000)
    with pytest.raises(RefrainInputError, match=r"repa\.teachers\.mhubert\.checkpoint_dir .*nowhere.*Fix:"):
        SSLTeacher(spec)


def test_remote_code_needs_explicit_opt_in(tmp_path: Path, teacher_dir: Path) -> None:
    fake = tmp_path / "mert"
    fake.mkdir()
    config = json.loads((teacher_dir / "config.json").read_text())
    config.update(model_type="mert_model", auto_map={"AutoModel": "modeling_MERT.MERTModel"})
    (fake / "config.json").write_text(json.dumps(config))
    with pytest.raises(RefrainInputError, match="trust_remote_code"):
        SSLTeacher(TeacherSpec("mert", str(fake), 24000))


def test_bad_layer_is_an_error(teacher_dir: Path) -> None:
    with pytest.raises(RefrainInputError, match=r"repa\.teachers\.mert\.layer"):
        SSLTeacher(mert_like(teacher_dir, layer=5))


def test_tiny_random_config_loads_both_teachers(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"run_dir": str(tmp_path), "repa": OmegaConf.load(CONF / "tiny_random.yaml")})
    specs = {name: instantiate(node) for name, node in cfg.repa.teachers.items()}
    for spec in specs.values():
        create_random_hubert(spec.checkpoint_dir, hidden_size=spec.feature_dim, num_layers=2)
    teachers = load_teachers(specs)
    assert sorted(teachers) == ["mert", "mhubert"]
    assert teachers["mert"].spec.normalize and teachers["mert"].spec.chunk_seconds == 5.0
    assert teachers["mhubert"].spec.sample_rate == 16000
    assert specs["mert"].resolved_feature_dim() == teachers["mert"].feature_dim == 32
    real = OmegaConf.create({"repa": OmegaConf.load(CONF / "mert_mhubert.yaml")})
    mert = instantiate(real.repa.teachers.mert)
    assert (mert.sample_rate, mert.layer, mert.chunk_seconds, mert.feature_dim) == (24000, 7, 5.0, 1024)
    assert mert.trust_remote_code is False
