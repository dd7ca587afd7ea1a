"""``refrain-app``: the web interface over a bundle, with ACE-Step's app flags and their defaults.

    refrain-app --bundle exps/demo/dit_bundle [--lora ADAPTER[:SCALE] ...] [--port 7865]
    refrain-app --checkpoint_path BUNDLE --server_name 0.0.0.0 --share      (ACE-Step's names)

It binds to 127.0.0.1 unless --server_name says otherwise; --share (off by default) asks Gradio for a
public link that lets anyone with the link generate on this machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from refrain.errors import RefrainInputError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refrain-app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", "--checkpoint_path", dest="bundle", required=True, help="a DiT bundle")
    parser.add_argument(
        "--lora", action="append", default=[], metavar="ADAPTER[:SCALE]", help="adapters to offer"
    )
    parser.add_argument(
        "--server_name", default="127.0.0.1", help="address to bind (0.0.0.0 exposes the app)"
    )
    parser.add_argument("--port", type=int, default=7865)
    parser.add_argument(
        "--share",
        nargs="?",
        const=True,
        default=False,
        type=_bool,
        help="a public Gradio link: anyone with it can generate here (off by default)",
    )
    parser.add_argument("--device_id", type=int, default=0, help="CUDA device index (CPU when none)")
    parser.add_argument(
        "--bf16", nargs="?", const=True, default=True, type=_bool, help="DiT in bfloat16 on CUDA"
    )
    parser.add_argument("--torch_compile", nargs="?", const=True, default=False, type=_bool)
    parser.add_argument("--output_dir", default=None, help="where songs go (default: a new temp folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from refrain.app.session import AppSession
    from refrain.bundles.dit import open_dit_bundle
    from refrain.lora.adapters import AdapterRef

    try:
        open_dit_bundle(args.bundle)  # a wrong folder fails here, in one line, before Gradio starts
        refs = [AdapterRef.parse(text) for text in args.lora]
        for ref in refs:
            if not ref.path.is_dir():
                raise RefrainInputError(ref.path, "adapter folder not found", "pass a LoRA adapter folder")
    except RefrainInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    device = f"cuda:{args.device_id}" if cuda else "cpu"
    dtype = torch.bfloat16 if (args.bf16 and cuda) else None
    output = Path(args.output_dir or tempfile.mkdtemp(prefix="refrain-app-"))
    output.mkdir(parents=True, exist_ok=True)
    session = AppSession(
        Path(args.bundle), output, [str(r.path) for r in refs], device, dtype, args.torch_compile
    )
    from refrain.app.ui import build_app

    app = build_app(session)
    if args.share:
        print("--share: Gradio makes a public link; anyone who has it can generate songs on this machine")
    print(f"songs go to {output}")
    app.queue(default_concurrency_limit=1).launch(
        server_name=args.server_name,
        server_port=args.port,
        share=bool(args.share),
        allowed_paths=[str(output)],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
