"""Sub-commands of the ``hean`` CLI, one module each (see :mod:`hean.cli`)."""

import argparse
import re
import sys
from typing import IO

__all__ = ["JSON_HELP", "HeanParser", "emit_json", "plain", "text_out"]

JSON_HELP = "also write it as JSON to OUT ('-': to stdout, alone; the text then goes to stderr)"

_ROLE = re.compile(r":(?:func|mod|class|data|meth|attr|exc):`(~?)([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")


def plain(text: str) -> str:
    """Help text for users: the markup of docstrings (``code``, :func:`~a.b`, **bold**) taken out."""
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return _BOLD.sub(r"\1", _LITERAL.sub(r"\1", text))


class _Plain(argparse.HelpFormatter):
    def _format_text(self, text: str) -> str:
        return super()._format_text(plain(text))

    def _expand_help(self, action: argparse.Action) -> str:
        return plain(super()._expand_help(action))


class _PlainRaw(argparse.RawDescriptionHelpFormatter, _Plain):
    pass


class HeanParser(argparse.ArgumentParser):
    """Every ``hean`` parser: help without docstring markup, whatever text a command gives it (its sub-parsers
    are HeanParsers too)."""

    def __init__(self, *args, formatter_class: type = argparse.HelpFormatter, **kwargs) -> None:
        if issubclass(formatter_class, argparse.RawDescriptionHelpFormatter):
            formatter_class = _PlainRaw
        elif formatter_class is argparse.HelpFormatter:
            formatter_class = _Plain
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def text_out(json_dest: str | None) -> IO[str]:
    """Where a command's human text goes: stderr when ``--json -`` makes stdout the JSON alone (so
    ``hean CMD --json - | jq .`` works), else stdout."""
    return sys.stderr if json_dest == "-" else sys.stdout


def _plain_json(o: object) -> object:
    """numpy scalars and arrays as their Python values (a count stays a number); anything else as text."""
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def emit_json(dest: str, obj: object) -> None:
    """The ``--json OUT`` convention of every command: ``-`` prints the JSON (alone) to stdout, anything else
    is a path written atomically (the command prints its text as usual, or to :func:`text_out`)."""
    import json

    text = json.dumps(obj, indent=2, default=_plain_json) + "\n"
    if dest == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    from hean.paths import write_atomically

    write_atomically(dest, lambda f: f.write(text))
