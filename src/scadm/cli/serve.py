"""`scadm serve`: the interactive face editor in the browser (needs the `serve` extra: gradio)."""

from __future__ import annotations

from ..errors import ScadmError
from ..shipped import model_help, resolve_model


def add_serve_commands(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="interactive face editor in the browser (gradio)",
        description="Open a local web page to edit faces part by part: upload a target and a "
        "reference with their masks or take the built-in examples (procedural faces; for a "
        "photo model such as --model realistic, two public-domain photos parsed automatically, "
        "which needs `make parse-extras`), paint the mask, choose each part's style source, "
        "render. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--model", help=model_help())
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1); 0.0.0.0 exposes the editor to your network",
    )
    p.add_argument("--port", type=int, default=7860, help="default 7860")
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda, cuda:1, ...")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    model = resolve_model(args.model)
    try:
        from ..serve.app import launch
    except ImportError as err:
        raise ScadmError(f"scadm serve needs gradio ({err.name} is missing): pip install 'scadm[serve]'") from None
    if not 0 < args.port < 65536:
        raise ScadmError(f"--port must be in 1..65535, got {args.port}")
    launch(model=model, host=args.host, port=args.port, device=args.device)
    return 0
