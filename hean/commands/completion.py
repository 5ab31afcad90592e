"""``hean completion bash|zsh``: a shell completion script for ``hean``, made from the command line itself.

Why generated: the script lists every command, sub-command and option as the parser defines them now, so it
cannot drift from the CLI. Install it with ``eval "$(hean completion bash)"`` in ``~/.bashrc`` (zsh: the
same with ``zsh``, which loads bash's completion support).
"""

from __future__ import annotations

import argparse
import shlex


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "completion",
        help='print a shell completion script (eval "$(hean completion bash)" in ~/.bashrc)',
        description="Print a completion script for bash or zsh: commands, sub-commands and options of hean. "
        'Add eval "$(hean completion bash)" to ~/.bashrc (or zsh to ~/.zshrc).',
    )
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell")
    p.set_defaults(func=run)


def _words(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """``{"": commands, "cmd": its options and sub-commands, "cmd sub": ...}`` from the parser."""
    out: dict[str, list[str]] = {}

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        words = []
        for a in p._actions:
            words += [o for o in a.option_strings if o.startswith("--") or len(o) == 2]
            if isinstance(a, argparse._SubParsersAction):
                for name, child in a.choices.items():
                    words.append(name)
                    walk(child, f"{path} {name}".strip())
            elif not a.option_strings and a.choices:  # a positional with choices (bench targets, shells)
                words += [str(c) for c in a.choices]
        out[path] = sorted(set(words) - {"-h"})

    walk(parser, "")
    return out


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    words = _words(parser)
    cases = "\n".join(
        f"    {shlex.quote(path)}) words={shlex.quote(' '.join(ws))} ;;" for path, ws in sorted(words.items()) if path
    )
    body = f"""_hean() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} path="" w i words
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${{COMP_WORDS[i]}}
    [[ $w == -* ]] && continue
    case " {" ".join(k for k in words if k)} " in
      *" ${{path:+$path }}$w "*) path=${{path:+$path }}$w ;;
    esac
  done
  case "$path" in
    "") words={shlex.quote(" ".join(words[""]))} ;;
{cases}
    *) words="" ;;
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _hean hean
"""
    if shell == "zsh":
        body = "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body


def run(args: argparse.Namespace) -> int:
    from hean.cli import build_parser

    print(script(build_parser(), args.shell), end="")
    return 0
