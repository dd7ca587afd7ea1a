"""Train a refrain model: `python trainer.py experiment=vae_mp3 --dataset_path PATH` (see --help)."""

from refrain.cli.train import main

if __name__ == "__main__":
    main()
