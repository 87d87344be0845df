"""What the entry points share before Hydra parses the command line."""

from __future__ import annotations

import sys

# Keys whose values are paths, or name a row by its overrides: a sweep's job folders are named
# `data.fold=1,model.d_hidden=384`, whose `=` and `,` Hydra's override grammar would read as syntax.
LITERAL_KEYS = ("ckpt", "input", "output", "model.init_from", "report.reference")


def quote_paths(argv: list[str] | None = None) -> None:
    """Quote, in `argv` (sys.argv), the values of LITERAL_KEYS that hold `=`, so that Hydra takes them as
    written. Values already quoted, and those without `=` (a sweep `ckpt=a.pt,b.pt`), are left alone."""
    argv = sys.argv if argv is None else argv
    for position, argument in enumerate(argv):
        key, _, value = argument.partition("=")
        if key.lstrip("+") in LITERAL_KEYS and "=" in value and not value.startswith(("'", '"')):
            argv[position] = f"{key}='{value}'"
