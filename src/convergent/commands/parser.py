"""The argument parser shared by ``convergent`` and its sub-commands: jsonargparse whose errors
are one line on stderr — ``convergent pretrain: error: --trainer.max_steps expects an
integer, got 'abc'`` — with "did you mean" hints on mistyped sub-commands, choices, options
and config keys, and exit status 2 (:data:`convergent.exits.USAGE`); ``--help`` shows the
usage. ``JSONARGPARSE_DEBUG=1`` raises the parser's exception instead."""

import difflib
import os
import re
import sys
from typing import NoReturn

from jsonargparse import ArgumentParser

from convergent.exits import USAGE

_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_REQUIRED = re.compile(r"the following arguments are required: (.*)")
_UNACCEPTED = re.compile(r"does not accept (?:nested )?(?:option|key) '([^']*)'")
_PARSER_KEY = re.compile(r'^Parser key "([^"]*)":')
_EXPECTED = re.compile(r"Expected a <class '(\w+)'>")
_GOT = re.compile(r"(?:Got value|Given value): (.*)")
_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
               "NoneType": "null", "dict": "a mapping ({key: value, ...})", "tuple": "a list ([a, b, ...])",
               "list": "a list ([a, b, ...])"}  # fmt: skip


class CommandError(Exception):
    """Bad input found while a command runs: printed as one line, exit status 2."""


def error_message(e: BaseException) -> str:
    """One line for ``e`` as a :class:`CommandError`: KeyError's repr quotes are dropped, an
    OSError names its file (``runs/x/model.safetensors: No space left on device (...)``) —
    that of the first failure when writers failed again while closing (a full disk fails a
    checkpoint, then the metrics file's flush)."""
    if isinstance(e, KeyError) and e.args:
        return one_line(str(e.args[0]))
    if isinstance(e, OSError):
        e = first_io_error(e)
        if e.filename and str(e.filename) not in (e.strerror or ""):
            return one_line(f"{e.filename}: {e.strerror or e}")
    return one_line(str(e) or type(e).__name__)


def first_io_error(e: OSError) -> OSError:
    """The first failure in the chain of ``OSError`` exceptions raised while handling one another,
    as its outermost restatement (``raise OSError(...) from e`` adds what was being written)
    that names a file; ``e`` itself when none names one."""
    found, node = e, e
    while True:
        statement = node
        while isinstance(node.__cause__, OSError):  # the same failure, restated with more context
            node = node.__cause__
        if statement.filename:
            found = statement
        if not isinstance(node.__context__, OSError) or node.__cause__ is not None:
            return found
        node = node.__context__  # a writer failed again while this failure was handled


def one_line(text: str) -> str:
    """``text`` on one line: its lines, stripped, joined by "; "."""
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


class Parser(ArgumentParser):
    """``jsonargparse.ArgumentParser`` whose errors are one line that suggests the closest
    valid spelling (no usage: ``--help`` shows it)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        parser = getattr(ex, "subcommand_parser", None) or _named_subcommand(self, message) or self
        message = _explain(message, parser)
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # raises: a parent parser, or a debugging user, handles it
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {one_line(message)}\n")
        self.exit(USAGE)


def _named_subcommand(parser: ArgumentParser, message: str) -> ArgumentParser | None:
    """The sub-command parser whose arguments a "required" ``message`` names (``eval.encoder``);
    jsonargparse sets ``subcommand_parser`` on the exception of other sub-command errors."""
    m = _REQUIRED.search(message)
    first = m.group(1).split(",")[0].strip() if m else ""
    for action in parser._actions:
        for name, sub in getattr(action, "_name_parser_map", {}).items():  # only sub-command actions have it
            if first.startswith(name + "."):
                return sub
    return None


def _explain(message: str, parser: ArgumentParser) -> str:
    """``message`` with a hint appended, option names put back for jsonargparse's dests, and
    type errors said in one sentence."""
    if m := _INVALID_CHOICE.search(message):
        choices = re.findall(r"'([^']*)'", m.group(2))
        return message + _hint(m.group(1), choices)
    if m := _UNRECOGNIZED.search(message):
        options = [s for a in parser._actions for s in a.option_strings]
        first = m.group(1).split()[0].split("=")[0]
        return message + (_hint(first, options) if first.startswith("-") else "")
    if m := _REQUIRED.search(message):
        by_dest = _option_names(parser)
        dests = [n.strip() for n in m.group(1).split(",")]
        names = [by_dest.get(d) or by_dest.get(d.split(".", 1)[-1], d) for d in dests]
        return message[: m.start(1)] + ", ".join(names)
    if m := _UNACCEPTED.search(message):
        dests = list(_option_names(parser))  # the sub-command's own, or every sub-command's with its name first
        return message + _hint(m.group(1), dests + [d.split(".", 1)[1] for d in dests if "." in d])
    if m := _PARSER_KEY.match(message):
        return _type_error(m.group(1), message, parser)
    return message


def _type_error(key: str, message: str, parser: ArgumentParser) -> str:
    """``--trainer.max_steps expects an integer, got 'abc'`` from jsonargparse's several
    lines about the value of ``key``."""
    option = _option_names(parser).get(key, f"--{key}")
    expected = list(dict.fromkeys(_EXPECTED.findall(message)))
    got = _GOT.search(message)
    if not expected or got is None:
        return f"{option}: {one_line(message[message.index(':') + 1 :])}"
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
    return f"{option} expects {words}, got {got.group(1).strip()!r}"


def _option_names(parser: ArgumentParser, prefix: str = "") -> dict[str, str]:
    """Dotted dest (``convert.source_format``) -> option string (``--from``), sub-commands included."""
    names = {}
    for action in parser._actions:
        names[prefix + action.dest] = (action.option_strings or [action.dest])[0]
        for name, sub in getattr(action, "_name_parser_map", {}).items():  # only sub-command actions have it
            names.update(_option_names(sub, f"{prefix}{name}."))
    return names


def _hint(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=2, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
