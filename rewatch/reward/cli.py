"""`rewatch reward` sub-commands."""

from __future__ import annotations

import typer

app = typer.Typer(help="`rewatch reward`: not built yet.", no_args_is_help=True)
