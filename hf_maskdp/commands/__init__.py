"""Subcommands of `hf-maskdp`; each module has `register(subparsers)` (see `hf_maskdp.cli`)."""
