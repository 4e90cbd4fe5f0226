"""`hf-maskdp space` binds where gradio's environment variables say, and --host/--port win over them."""

from hf_maskdp.cli import build_parser


def test_space_honours_gradio_server_port_and_name(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    args = build_parser().parse_args(["space"])
    assert (args.host, args.port) == ("0.0.0.0", 7861)
    args = build_parser().parse_args(["space", "--port", "7999", "--host", "127.0.0.1"])
    assert (args.host, args.port) == ("127.0.0.1", 7999)


def test_space_defaults_to_this_machine(monkeypatch):
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    args = build_parser().parse_args(["space"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
