"""The Gradio page: one tab per mode, shared sampler and LoRA controls, one result panel and a history.

Every tab's button calls ``AppSession.generate`` with that tab's form; the result panel shows the audio
player, its spectrogram and the audio + sidecar downloads. "Load sidecar" fills a tab from a sidecar, so
pressing its button again remakes the song (the same bits on CPU). A mode the bundle or its adapters
cannot run keeps its tab, with the one-line reason instead of the form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from refrain.app.forms import OPTION_FIELDS, SOURCE_MODES, TABS, form_of
from refrain.app.session import AppSession, Cancelled
from refrain.data.multitrack import DEFAULT_STEMS
from refrain.errors import RefrainInputError
from refrain.sampling.flowedit import FLOWEDIT_PRESETS
from refrain.sampling.options import GUIDANCE_NAMES
from refrain.sampling.solvers import SOLVERS

GUIDANCES, PRESETS = list(GUIDANCE_NAMES), list(FLOWEDIT_PRESETS)  # the sampler's registries
FIELD_WIDGETS: dict[str, Any] = {
    "prompt": lambda **kw: gr.Textbox(
        label="Tags / prompt", placeholder="pop, synth, female vocals, 120 bpm", **kw
    ),
    "lyrics": lambda **kw: gr.Textbox(label="Lyrics ([verse] tags or LRC)", lines=6, **kw),
    "duration": lambda **kw: gr.Number(label="Duration (s)", value=30.0, **kw),
    "variance": lambda **kw: gr.Slider(0.0, 1.0, value=0.5, label="Variance", **kw),
    "start": lambda **kw: gr.Number(label="Start (s)", value=0.0, **kw),
    "end": lambda **kw: gr.Number(label="End (s)", value=5.0, **kw),
    "source_prompt": lambda **kw: gr.Textbox(label="Source prompt", **kw),
    "source_lyrics": lambda **kw: gr.Textbox(label="Source lyrics", lines=4, **kw),
    "target_prompt": lambda **kw: gr.Textbox(label="Target prompt", **kw),
    "target_lyrics": lambda **kw: gr.Textbox(label="Target lyrics", lines=4, **kw),
    "preset": lambda **kw: gr.Dropdown(PRESETS, value="only_lyrics", label="Edit preset", **kw),
    "left": lambda **kw: gr.Number(label="Extend left (s)", value=0.0, **kw),
    "right": lambda **kw: gr.Number(label="Extend right (s)", value=10.0, **kw),
    "strength": lambda **kw: gr.Slider(0.0, 1.0, value=0.5, label="Strength", **kw),
    "instrument": lambda **kw: gr.Dropdown(
        list(DEFAULT_STEMS), value=DEFAULT_STEMS[1], label="Instrument", **kw
    ),
}


def unavailable(session: AppSession, mode: str) -> str | None:
    """Why ``mode`` cannot run with this bundle and these adapters (None: it can)."""
    from refrain.lora.adapters import read_adapter_spec

    if mode in ("stem", "accompany"):
        variant = "stemgen" if mode == "stem" else "singing2accompaniment"
        if not any(read_adapter_spec(path).variant == variant for path in session.adapters):
            return f"needs a {variant} adapter: start the app with --lora ADAPTER of that variant"
    return None


def _run(
    session: AppSession, mode: str, names: list[str], values: tuple[Any, ...], progress: gr.Progress
) -> tuple:
    """Call the session with one tab's values; errors become one line in the page."""
    values = list(values)
    upload = values.pop() if mode in SOURCE_MODES or mode == "retake" else None
    pick = values.pop() if mode in SOURCE_MODES or mode == "retake" else None
    scales = {path: float(values.pop()) for path in reversed(session.adapters)}
    form = dict(zip(names, values, strict=True))
    source = upload or (
        session.source_of(_index(pick), None) if (mode in SOURCE_MODES or mode == "retake") else None
    )
    try:
        result = session.generate(
            mode, form, scales, source, lambda d, t: progress((d, t), desc=f"{mode}: step")
        )
    except Cancelled:
        raise gr.Error("cancelled", print_exception=False) from None
    except RefrainInputError as error:
        raise gr.Error(str(error), print_exception=False) from None
    labels = session.history_labels()
    note = "; ".join(session.notes)
    return (
        str(result.audio),
        str(result.spectrogram),
        [str(result.audio), str(result.sidecar)],
        f"{result.label}" + (f" ({note})" if note else ""),
        gr.update(choices=labels, value=labels[-1]),
    )


def _index(label: str | None) -> int | None:
    return int(label.split()[0].lstrip("#")) if label else None


def build_app(session: AppSession) -> gr.Blocks:
    """The whole page for ``session``; each tab's button is also an API endpoint named after its mode."""
    with gr.Blocks(title=f"refrain: {session.bundle.name}") as app:
        gr.Markdown(f"## refrain: {session.bundle.name}")
        with gr.Accordion("Sampler", open=False, elem_id="sampler"):
            options = {
                "steps": gr.Number(label="Steps", value=30, precision=0, elem_id="opt-steps"),
                "guidance": gr.Dropdown(GUIDANCES, value="apg", label="Guidance"),
                "guidance_scale": gr.Number(label="Guidance scale", value=15.0),
                "guidance_interval": gr.Slider(0.0, 1.0, value=0.5, label="Guidance interval"),
                "solver": gr.Dropdown(list(SOLVERS), value="euler", label="Solver"),
                "shift": gr.Number(label="Shift", value=3.0),
                "seed": gr.Number(label="Seed", value=0, precision=0, elem_id="opt-seed"),
            }
        with gr.Accordion("LoRA adapters (scale 0 = off)", open=bool(session.adapters)):
            sliders = [
                gr.Slider(0.0, 2.0, value=1.0, step=0.05, label=Path(p).name) for p in session.adapters
            ]
            if not sliders:
                gr.Markdown("No adapter: start the app with `--lora ADAPTER[:SCALE]` to pick adapters here.")
        history = gr.Dropdown([], label="History (source for retake / repaint / edit / extend / audio2audio)")
        upload = gr.Audio(label="...or upload a source song", type="filepath")
        tabs: dict[str, tuple[list[str], list[Any]]] = {}
        buttons: dict[str, gr.Button] = {}
        with gr.Tabs() as tab_group:
            for mode, fields in TABS.items():
                with gr.Tab(mode, id=mode):
                    reason = unavailable(session, mode)
                    if reason is not None:
                        gr.Markdown(f"**{mode} is not available:** {reason}")
                        continue
                    widgets = [FIELD_WIDGETS[name](elem_id=f"{mode}-{name}") for name in fields]
                    tabs[mode] = (list(fields), widgets)
                    buttons[mode] = gr.Button(f"Generate ({mode})", variant="primary", elem_id=f"run-{mode}")
        audio = gr.Audio(label="Result", type="filepath", elem_id="result-audio")
        picture = gr.Image(label="Spectrogram", type="filepath")
        files = gr.File(label="Download audio + sidecar", file_count="multiple", elem_id="downloads")
        status = gr.Textbox(label="Status", interactive=False, elem_id="status")
        stop = gr.Button("Stop", variant="stop")
        with gr.Row():
            sidecar_file = gr.File(label="Load sidecar (.json)", file_types=[".json"], type="filepath")
        events = []
        for mode, (names, widgets) in tabs.items():
            button = buttons[mode]
            inputs = [*widgets, *options.values(), *sliders]
            if mode in SOURCE_MODES or mode == "retake":
                inputs += [history, upload]
            all_names = [*names, *OPTION_FIELDS]

            def handler(
                *values: Any,
                _mode: str = mode,
                _names: list[str] = all_names,
                progress: gr.Progress = gr.Progress(),
            ) -> tuple:
                return _run(session, _mode, _names, values, progress)

            events.append(
                button.click(
                    handler,
                    inputs,
                    [audio, picture, files, status, history],
                    api_name=mode,
                    concurrency_limit=1,
                )
            )
        stop.click(session.cancel, None, None, cancels=events, api_name="stop")
        fill_outputs = [tab_group, *[w for _, ws in tabs.values() for w in ws], *options.values()]

        def load_sidecar(path: str | None) -> list[Any]:
            import json

            if not path:
                raise gr.Error("no sidecar chosen", print_exception=False)
            try:
                mode, form = form_of(json.loads(Path(path).read_text(encoding="utf-8")))
            except (ValueError, RefrainInputError) as error:
                raise gr.Error(f"{Path(path).name}: {error}", print_exception=False) from None
            if mode not in tabs:
                raise gr.Error(f"{mode} is not available in this app", print_exception=False)
            updates: list[Any] = [gr.update(selected=mode)]
            for tab_mode, (names, _widgets) in tabs.items():
                updates += [
                    gr.update(value=form[n]) if tab_mode == mode and n in form else gr.update() for n in names
                ]
            updates += [gr.update(value=form[n]) if n in form else gr.update() for n in OPTION_FIELDS]
            return updates

        sidecar_file.change(load_sidecar, sidecar_file, fill_outputs, api_name="load_sidecar")
    return app
