"""The argument parser shared by ``convergent`` and its sub-commands: jsonargparse with
"did you mean" hints on mistyped sub-commands, choices and options."""

import difflib
import re
from typing import NoReturn

from jsonargparse import ArgumentParser

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_REQUIRED = re.compile(r"the following arguments are required: (.*)")


class CommandError(Exception):
    """Bad input found while a command runs: printed as one line, exit status 2."""


def error_message(e: BaseException) -> str:
    """One line for ``e`` as a :class:`CommandError`: KeyError's repr quotes are dropped, an
    OSError keeps its file name."""
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e):
        return f"{e.filename}: {e.strerror or e}"
    return str(e) or type(e).__name__


class Parser(ArgumentParser):
    """``jsonargparse.ArgumentParser`` whose errors suggest the closest valid spelling."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or self
        super().error(_explain(message, parser), ex)


def _explain(message: str, parser: ArgumentParser) -> str:
    """``message`` with a hint appended (or option names put back for jsonargparse's dests)."""
    if m := _INVALID_CHOICE.search(message):
        choices = re.findall(r"'([^']*)'", m.group(2))
        return message + _hint(m.group(1), choices)
    if m := _UNRECOGNIZED.search(message):
        options = [s for a in parser._actions for s in a.option_strings]
        first = m.group(1).split()[0].split("=")[0]
        return message + (_hint(first, options) if first.startswith("-") else "")
    if m := _REQUIRED.search(message):
        by_dest = _option_names(parser)
        names = [by_dest.get(n.strip(), n.strip()) for n in m.group(1).split(",")]
        return message[: m.start(1)] + ", ".join(names)
    return message


def _option_names(parser: ArgumentParser, prefix: str = "") -> dict[str, str]:
    """Dotted dest (``convert.source_format``) -> option string (``--from``), sub-commands included."""
    names = {}
    for action in parser._actions:
        names[prefix + action.dest] = (action.option_strings or [action.dest])[0]
        for name, sub in getattr(action, "_name_parser_map", {}).items():
            names.update(_option_names(sub, f"{prefix}{name}."))
    return names


def _hint(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
