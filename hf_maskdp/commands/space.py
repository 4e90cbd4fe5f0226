"""`hf-maskdp space`: serve the demo Space (spaces/app.py) locally."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

SPACE_APP = Path(__file__).resolve().parents[2] / "spaces" / "app.py"


def load_space_app(path: str | Path = SPACE_APP):
    """Import spaces/app.py as a module (it is a Space's entry point, not part of the package)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"the Space app is not at {path}: `hf-maskdp space` runs from a source checkout "
            "(pip install -e .); or pass --app PATH to spaces/app.py"
        )
    name = "hf_maskdp_space_app"
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(module)
    return module


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "space",
        help="serve the demo Space (anonymize, privacy budget, classify) in the browser",
        description="Serve the Gradio demo locally. Classify uses $HF_MASKDP_MODEL, or ./quickstart_output/maskdp_model.",
    )
    # gradio's own environment variables are honoured, as `python spaces/app.py` does
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="address to bind (default: $GRADIO_SERVER_NAME or 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
        help="port (default: $GRADIO_SERVER_PORT or 7860)",
    )
    parser.add_argument("--model", default=None, help="model folder or Hub id for the Classify tab")
    parser.add_argument("--app", default=str(SPACE_APP), help="path to spaces/app.py")
    parser.set_defaults(handler=run)


def run(args) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} is out of range: use 1-65535")
    app = load_space_app(args.app)
    print(f"hf-maskdp space: serving on http://{args.host}:{args.port} (Ctrl+C stops it)")
    app.launch(host=args.host, port=args.port, model=args.model)
    return 0
