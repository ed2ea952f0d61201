"""The command line of a tool that writes a file from the code: ``--check`` (exit 1 with a diff when the file
is stale, for CI) or ``--write`` (rewrite it in place); ``--file`` names another copy (tests)."""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def main(argv: Sequence[str] | None, *, tool: str, doc: str, default: Path, what: str, source: str,
         wanted: Callable[[str], str]) -> int:
    """Check or write the file; ``wanted`` maps its current text ('' if absent) to what it should be.

    ``tool`` is the module (``tools.code_deps``), ``doc`` its docstring, ``what`` the part of the file it
    writes (``code deps``) and ``source`` where that comes from (``what the stages import``).
    """
    parser = argparse.ArgumentParser(prog=f"python -m {tool}", description=doc.split("\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help=f"exit 1 with a diff if the {what} are stale")
    action.add_argument("--write", action="store_true", help=f"rewrite the {what} in place")
    parser.add_argument("--file", type=Path, default=default, help="the file (default: %(default)s)")
    args = parser.parse_args(argv)
    current = args.file.read_text(encoding="utf-8") if args.file.is_file() else ""
    text = wanted(current)
    if args.write:
        if text != current:
            args.file.write_text(text, encoding="utf-8")
        return 0
    if text == current:
        return 0
    diff = difflib.unified_diff(current.splitlines(keepends=True), text.splitlines(keepends=True),
                                f"{args.file} (now)", f"{args.file} ({source})")
    sys.stderr.writelines(diff)
    print(f"{args.file}: {what} are stale; `python -m {tool} --write` rewrites them", file=sys.stderr)
    return 1
