"""Evaluation: the figures papers in this field report (STOI, PESQ, MCD, FAD, CLAP score, WER/PER), for VAE
bundles, generated songs and LoRA effects, from the command line (``refrain-eval``), in training and in reports."""
