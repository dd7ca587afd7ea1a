"""A tiny base bundle and a StemGen adapter, and a running refrain-app on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.bundles import fast_base_bundle
from helpers.lora import perturb_trainable
from helpers.network import free_port

from refrain.bundles.dit import open_dit_bundle
from refrain.lora.adapters import save_adapter
from refrain.lora.config import parse_lora_spec
from refrain.lora.inject import inject_lora

STEM = {"variant": "stemgen", "r": 4, "lora_alpha": 4, "conditioning": {"control_width": 16}}


@pytest.fixture(scope="session")
def app_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("app")
    bundle = fast_base_bundle(root)
    spec = parse_lora_spec(STEM)
    model = inject_lora(open_dit_bundle(bundle).build_model(), spec)
    perturb_trainable(model, seed=1, std=0.3)
    return {"root": root, "bundle": bundle, "stem": save_adapter(model, root / "stem", spec)}


@pytest.fixture(scope="session")
def running_app(app_world: dict[str, Path]) -> Iterator[tuple[str, object]]:
    """The app over the tiny bundle with the StemGen adapter, served in this process."""
    from refrain.app.session import AppSession
    from refrain.app.ui import build_app

    out = app_world["root"] / "songs"
    out.mkdir()
    session = AppSession(app_world["bundle"], out, [str(app_world["stem"])])
    app = build_app(session)
    port = free_port()
    app.queue(default_concurrency_limit=1).launch(
        server_name="127.0.0.1",
        server_port=port,
        prevent_thread_lock=True,
        quiet=True,
        allowed_paths=[str(out)],
    )
    try:
        yield f"http://127.0.0.1:{port}/", session
    finally:
        app.close()
