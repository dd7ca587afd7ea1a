"""Dataset source layouts, one module each; every module registers its layout with
``refrain.data.sources.register_source`` and is imported by ``source_layouts()`` on first use, so a new
layout is one file here plus its test."""
