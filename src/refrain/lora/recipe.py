"""Turn a training config that names a LoRA JSON into a LoRA run (called by ``refrain.training.run.train``).

ACE-Step's command line gives only ``--checkpoint_dir BASE_BUNDLE --lora_config_path X.json``; no task or
data group is selected. The ``lora`` group (conf/lora/default.yaml, applied when none was selected) says
which task/data configs a LoRA run starts from and what it changes in them; facts the base bundle
already fixes (its VAE, text encoder, prompt length, speaker size) are filled in unless set explicitly.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from refrain.config import conf_dir
from refrain.errors import RefrainInputError
from refrain.lora.config import load_lora_spec

DEFAULT_OPTION = "default"


def _group_file(group: str, option: str) -> Path:
    path = conf_dir() / group / f"{option}.yaml"
    if not path.is_file():
        raise RefrainInputError(f"lora.base_{group}", f"no config {path}", f"use an option of conf/{group}/")
    return path


def lora_run_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` unchanged when no LoRA JSON is named, else a copy set up for LoRA fine-tuning."""
    if not cfg.get("lora_config_path"):
        return cfg
    load_lora_spec(cfg.lora_config_path)  # bad JSON fails here, before anything is built
    if not cfg.get("checkpoint_dir"):
        raise RefrainInputError(
            "--checkpoint_dir", "a LoRA run needs the base DiT bundle it adapts",
            "pass --checkpoint_dir BASE_BUNDLE (a folder made by refrain-export)",
        )  # fmt: skip
    from refrain.bundles.dit import open_dit_bundle

    bundle = open_dit_bundle(cfg.checkpoint_dir, verify=False)
    out = cfg.copy()
    with open_dict(out):
        if out.get("lora") is None:
            out.lora = OmegaConf.load(_group_file("lora", DEFAULT_OPTION))
        lora = out.lora
        for slot in ("task", "data"):
            base = out.get(slot)
            if base is None:
                base = OmegaConf.load(_group_file(slot, str(lora[f"base_{slot}"])))
            out[slot] = OmegaConf.merge(base, lora[slot])
        if not out.get("vae_bundle"):
            out.vae_bundle = str(bundle.vae_path)
        encoder = bundle.text_encoder
        if out.get("text_encoder_dir") is None and encoder.path:
            out.text_encoder_dir = encoder.path
        data = out.data
        if "text_max_length" in data:
            data.text_max_length = int(encoder.max_length)
        speaker = (bundle.manifest.get("model") or {}).get("speaker_dim")
        if "speaker_dim" in data and data.get("speaker_dim") is None and speaker:
            data.speaker_dim = int(speaker)
    return out
