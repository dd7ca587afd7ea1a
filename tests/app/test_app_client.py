"""Drive every tab of refrain-app through gradio_client, as a remote user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from gradio_client import Client, handle_file

OPTIONS = {
    "steps": 3,
    "guidance": "cfg",
    "guidance_scale": 2.0,
    "guidance_interval": 1.0,
    "solver": "euler",
    "shift": 3.0,
    "seed": 7,
}


@pytest.fixture(scope="module")
def client(running_app: tuple[str, object]) -> Client:
    return Client(running_app[0], verbose=False)


def call(client: Client, mode: str, fields: dict, scale: float = 1.0, source: str | None = None) -> tuple:
    args = [*fields.values(), *OPTIONS.values(), scale]
    if source is not None or mode in (
        "retake",
        "repaint",
        "edit",
        "extend",
        "audio2audio",
        "stem",
        "accompany",
    ):
        args += [None, handle_file(source) if source else None]
    return client.predict(*args, api_name=f"/{mode}")


def check_result(result: tuple, mode: str) -> dict:
    audio, picture, files, status, _history = result
    assert Path(audio).suffix == ".flac" and sf.info(audio).frames > 0
    assert Path(picture).suffix == ".png" and Path(picture).stat().st_size > 1000
    sidecar = next(f for f in files if str(f).endswith(".json"))
    data = json.loads(Path(sidecar).read_text())
    assert data["mode"] == mode and mode in status
    return data


def test_every_tab_returns_audio_spectrogram_and_sidecar(client: Client, running_app) -> None:
    song = check_result(
        call(client, "text2music", {"prompt": "synth pop", "lyrics": "", "duration": 1.0}), "text2music"
    )
    assert song["options"]["seed"] == 7 and song["app"]["adapters"][0]["scale"] == 1.0
    source = running_app[1].history[-1].audio
    check_result(call(client, "retake", {"variance": 0.3}), "retake")
    check_result(
        call(
            client,
            "repaint",
            {"start": 0.2, "end": 0.6, "prompt": "rock", "lyrics": "", "variance": 1.0},
            source=str(source),
        ),
        "repaint",
    )
    check_result(
        call(
            client,
            "edit",
            {
                "source_prompt": "synth pop",
                "source_lyrics": "",
                "target_prompt": "jazz",
                "target_lyrics": "",
                "preset": "remix",
            },
            source=str(source),
        ),
        "edit",
    )
    check_result(
        call(
            client,
            "extend",
            {"left": 0.0, "right": 0.5, "prompt": "synth pop", "lyrics": ""},
            source=str(source),
        ),
        "extend",
    )
    check_result(
        call(client, "audio2audio", {"strength": 0.5, "prompt": "lofi", "lyrics": ""}, source=str(source)),
        "audio2audio",
    )
    check_result(
        call(client, "stem", {"instrument": "drums", "prompt": "", "lyrics": ""}, source=str(source)), "stem"
    )


def test_sidecar_regenerates_the_same_bits_and_scale_zero_is_the_base(client: Client, running_app) -> None:
    fields = {"prompt": "ambient", "lyrics": "", "duration": 1.0}
    first = call(client, "text2music", fields)
    again = call(client, "text2music", fields)
    assert sf.read(first[0])[0].tobytes() == sf.read(again[0])[0].tobytes()
    sidecar = next(f for f in first[2] if str(f).endswith(".json"))
    session = running_app[1]  # the sidecar alone remakes the song through the pipeline, bit for bit
    remade = (
        session.pipeline(session.selection()).regenerate(sidecar).save(session.output_dir / "remade.flac")
    )
    assert sf.read(remade)[0].tobytes() == sf.read(first[0])[0].tobytes()
    filled = client.predict(handle_file(sidecar), api_name="/load_sidecar")
    assert "ambient" in json.dumps(filled)
    off = call(client, "text2music", fields, scale=0.0)
    assert (
        json.loads(Path(next(f for f in off[2] if str(f).endswith(".json"))).read_text())["app"]["adapters"]
        == []
    )


def test_bad_inputs_show_one_line_errors(client: Client) -> None:
    with pytest.raises(Exception, match="prompt and the lyrics are both empty"):
        call(client, "text2music", {"prompt": "", "lyrics": "", "duration": 1.0})
    with pytest.raises(Exception, match="repaint|start|end|outside|beyond"):
        call(
            client,
            "repaint",
            {"start": 50.0, "end": 60.0, "prompt": "x", "lyrics": "", "variance": 1.0},
            source=None,
        )


def test_stop_cancels_between_steps_and_a_second_request_waits(running_app) -> None:
    import threading

    from refrain.app.session import Cancelled

    session = running_app[1]
    fields = {"prompt": "drone", "lyrics": "", "duration": 1.0, **OPTIONS, "steps": 40}
    started, outcome = threading.Event(), {}

    def slow() -> None:
        def progress(done: int, total: int) -> None:
            started.set()

        try:
            session.generate("text2music", fields, progress=progress)
            outcome["first"] = "finished"
        except Cancelled:
            outcome["first"] = "cancelled"

    first = threading.Thread(target=slow)
    first.start()
    assert started.wait(60)
    second = threading.Thread(
        target=lambda: outcome.update(second=session.generate("text2music", {**fields, "steps": 2}))
    )
    second.start()
    session.cancel()
    first.join(60)
    second.join(60)
    assert outcome["first"] == "cancelled"
    assert (
        outcome["second"].mode == "text2music"
    )  # queued behind the first, then run (not lost, not cancelled)
