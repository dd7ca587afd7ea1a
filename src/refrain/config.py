"""Locating conf/, composing it, and turning Hydra's composition errors into one-line fixes."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from refrain.errors import RefrainInputError

_RESOLVERS_REGISTERED = False


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
    _RESOLVERS_REGISTERED = True


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


def compose_config(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    """Compose conf/ with Hydra overrides; a bad key or option raises a one-line RefrainInputError."""
    register_resolvers()
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
