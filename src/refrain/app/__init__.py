"""refrain-app: ACE-Step-style web interface over any refrain bundle (Gradio), a thin layer over
``refrain.sampling.Pipeline``: the app builds forms and keeps a history; every song comes from a mode of
the pipeline and carries the sidecar that regenerates it."""
