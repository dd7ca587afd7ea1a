"""Locating conf/, composing it, and turning Hydra's composition errors into one-line fixes."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from refrain.errors import RefrainInputError

_RESOLVERS_REGISTERED = False


def vae_fact(bundle: str | None, key: str, default: Any = None) -> Any:
    """``${refrain_vae:${vae_bundle},KEY[,DEFAULT]}``: a fact of the VAE bundle's manifest.

    The DiT's latent size is the VAE's, so it is read, not typed twice; ``DEFAULT`` stands in only
    while no bundle is named (composing a recipe to look at it).
    """
    if not bundle:
        return default
    from refrain.bundles.vae import read_manifest

    manifest = read_manifest(bundle)
    if key not in manifest:
        raise RefrainInputError(Path(bundle) / "manifest.json", f"has no {key!r}", "re-export the VAE bundle")
    return manifest[key]


def base_fact(bundle: str | None, key: str) -> Any:
    """``${refrain_base:${checkpoint_dir},KEY}``: what a LoRA run takes from its base DiT bundle."""
    from refrain.lora.recipe import base_bundle_fact

    return base_bundle_fact(bundle, key)


def project_path(relative: str) -> str:
    """``${refrain_project:lora_configs/x.json}``: a file of this checkout, wherever the run starts."""
    return str(conf_dir().parent / relative)


def register_resolvers() -> None:
    """Resolvers the configs use; registering twice is harmless."""
    global _RESOLVERS_REGISTERED
    if _RESOLVERS_REGISTERED:
        return
    OmegaConf.register_new_resolver(
        "refrain_wandb_offline",
        lambda: os.environ.get("WANDB_MODE", "") != "online" and not os.environ.get("WANDB_API_KEY"),
        replace=True,
    )
    OmegaConf.register_new_resolver("refrain_vae", vae_fact, replace=True)
    OmegaConf.register_new_resolver("refrain_base", base_fact, replace=True)
    OmegaConf.register_new_resolver("refrain_project", project_path, replace=True)
    _RESOLVERS_REGISTERED = True


def input_error_of(error: BaseException) -> RefrainInputError | None:
    """The RefrainInputError a resolver or constructor raised under OmegaConf's or Hydra's wrapper."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, RefrainInputError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def resolve_checked(cfg: DictConfig) -> dict[str, Any]:
    """The config resolved to plain values; a resolver's bad-input error comes out as itself (one line)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except Exception as error:  # OmegaConf wraps resolver errors in InterpolationResolutionError
        found = input_error_of(error)
        if found is None:
            raise
        raise found from None


def conf_dir() -> Path:
    """conf/ of this checkout: $REFRAIN_CONF, else ./conf, else the repository the package lives in."""
    candidates = []
    if os.environ.get("REFRAIN_CONF"):
        candidates.append(Path(os.environ["REFRAIN_CONF"]))
    candidates.append(Path.cwd() / "conf")
    candidates.append(Path(__file__).resolve().parents[2] / "conf")
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return candidate.resolve()
    raise RefrainInputError(
        candidates[-1],
        "no conf/train.yaml found",
        "run from the refrain checkout or set REFRAIN_CONF=/path/to/conf",
    )


def config_keys(cfg: DictConfig | ListConfig, prefix: str = "") -> Iterator[str]:
    """Every dotted key path in a config, for suggesting the closest valid one."""
    items = cfg.items_ex(resolve=False) if isinstance(cfg, DictConfig) else enumerate(cfg)
    for key, value in items:
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, DictConfig | ListConfig):
            yield from config_keys(value, prefix=f"{path}.")


def group_options(group: str) -> list[str]:
    """The option names of a config group (the yaml files in its folder)."""
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def config_groups() -> set[str]:
    """Every config group of conf/ (folders holding yaml files), e.g. repa, model/dit."""
    root = conf_dir()
    return {p.parent.relative_to(root).as_posix() for p in root.rglob("*.yaml") if p.parent != root}


def normalize_overrides(overrides: Sequence[str]) -> list[str]:
    """Overrides as Hydra needs them: ``GROUP=null`` drops the group (``~GROUP``); a LoRA JSON selects lora.

    Hydra refuses ``repa=null`` for a group a recipe selected; what a user means is "none", which Hydra
    spells ``~repa``. ``lora_config_path=X`` (``--lora_config_path X``) picks the ``lora`` group (its
    ``default`` option) unless one was chosen, so the composed config is the LoRA run itself.
    """
    groups = config_groups()
    out: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and value.strip() == "null" and key.strip() in groups:
            item = f"~{key.strip()}"
        out.append(item)
    keys = [o.partition("=")[0].lstrip("~+") for o in out]
    lora_at = [
        index
        for index, (key, item) in enumerate(zip(keys, out, strict=True))
        if key == "lora_config_path" and item.partition("=")[2].strip() not in ("", "null")
    ]
    if lora_at and "lora" not in keys:  # beside it: Hydra's parser wants overrides before its own flags
        out.insert(lora_at[-1] + 1, "lora=default")
    return out


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose conf/ with Hydra overrides; a bad key or option raises a one-line RefrainInputError."""
    register_resolvers()
    overrides = normalize_overrides(overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        try:
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=False)
        except Exception as error:  # Hydra raises several types; all are composition failures here
            raise explain_composition_error(error, overrides) from None


def explain_composition_error(error: Exception, overrides: Sequence[str]) -> RefrainInputError:
    """Turn Hydra's multi-line message into '<key>: <problem>. Fix: <closest valid keys>'."""
    message = str(error)
    missing_option = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    if missing_option:
        group, option = missing_option.groups()
        close = difflib.get_close_matches(option, group_options(group), n=3, cutoff=0.3) or group_options(
            group
        )
        return RefrainInputError(
            f"{group}={option}", f"no such option in conf/{group}/", f"use one of: {', '.join(close)}"
        )
    bad_key = re.search(r"Could not (?:override|append to|delete from) '([^']+)'", message) or re.search(
        r"Key '([^']+)' (?:is not in struct|not in)", message
    )
    if bad_key:
        key = bad_key.group(1)
        kept = [o for o in overrides if key not in o]
        try:
            known = list(config_keys(compose_config(kept if len(kept) < len(overrides) else [])))
        except RefrainInputError:
            known = []
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "add it with +" + key + "=VALUE if it is new"
        return RefrainInputError(key, "not a key of the composed config", hint)
    first_line = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return RefrainInputError(
        "overrides", first_line.rstrip("."), "check the override syntax: key=value, group=option"
    )
