"""`rewatch video` sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="`rewatch video`: not built yet.", no_args_is_help=True)
