"""`rewatch synth` sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="`rewatch synth`: not built yet.", no_args_is_help=True)
