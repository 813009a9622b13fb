"""What every command line shares: bad input and faults reported as one line, and a clean exit.

``python -m fmd.train``, ``fmd.bench`` and ``fmd.reproduce`` run their ``main`` through :func:`run`:
a bad value, a missing file, a full disk or a read-only folder ends the command with one line
``error: <what> — <what to do or what is accepted>`` on stderr and a non-zero status instead of a
traceback; Ctrl-C ends it with a line that says how to continue. Finished work is never touched
on the way out: every file a run writes is written atomically (:mod:`fmd.provenance`).
"""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Type, Union

# Exit statuses: 1 a fault while working, 2 bad input (argparse's own), 130 interrupted (as a shell).
FAULT, BAD_INPUT, INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``error: …``, not the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(BAD_INPUT, f"error: {message} (--help lists the options)\n")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def check_writable(folder: Path) -> None:
    """Make ``folder`` and write a file in it, so that a long job fails before it starts."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".write-test-{os.getpid()}"
    probe.write_bytes(b"")
    probe.unlink()


def describe_os_error(error: OSError) -> str:
    """One line for a failed read or write: what failed, where, and what to do."""
    if error.errno is None:  # raised by fmd with its own message (a dataset not found, say)
        return str(error)
    where = error.filename or "a file"
    if error.errno == errno.ENOSPC:
        return (f"no space left on the device while writing {where} — free some space and run the "
                "same command again (finished runs and checkpoints are kept)")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where} ({error.strerror}) — choose a folder you can write to"
    return f"{error.strerror or error} ({where})"


def run(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None, *,
        faults: Tuple[Type[BaseException], ...] = (), on_interrupt: str = "interrupted") -> int:
    """Run a command's ``main``; turn bad input (``ValueError``), file faults (``OSError``), the
    command's own ``faults`` and Ctrl-C into one line and an exit status.

    Anything else is a bug and keeps its traceback; ``FMD_TRACEBACK=1`` keeps it for all.
    """
    if os.environ.get("FMD_TRACEBACK"):
        return main(argv)
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"\n{on_interrupt}", file=sys.stderr)
        return INTERRUPTED
    except faults as error:
        print(f"error: {error}", file=sys.stderr)
        return FAULT
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return BAD_INPUT
    except OSError as error:
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return FAULT


def _form(default: Any, plural: bool = False) -> str:
    """How an error names what a parameter takes, after its default: "a list of integers"."""
    if isinstance(default, (list, tuple)):
        inner = {_form(v, plural=True) for v in default}
        return "lists" if plural else "a list" + (f" of {inner.pop()}" if len(inner) == 1 else "")
    names = {bool: ("True or False", "True or False"), int: ("an integer", "integers"),
             float: ("a number", "numbers"), str: ("a string", "strings")}
    singular, many = names.get(type(default), (f"a {type(default).__name__}", "values"))
    return many if plural else singular


def _fits(value: Any, default: Any) -> bool:
    """Whether ``value`` has the type of ``default`` (an integer for a number, a list for a tuple)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        kinds = {type(v) for v in default}
        return isinstance(value, (list, tuple)) and (
            len(kinds) != 1 or all(_fits(v, default[0]) for v in value))
    return isinstance(value, type(default))


def check_parameters(defaults: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Raise one line naming a notebook parameter whose value (papermill's ``-p``) has the wrong type.

    A parameter takes its default's type; one whose default is None takes anything but a list
    typed as text. ``papermill -p`` passes a list as a string, so the line shows ``-y`` instead.
    """
    for name, default in defaults.items():
        value = values.get(name, default)
        as_text = isinstance(value, str)
        looks_like_list = as_text and value.strip().startswith(("[", "("))
        if default is None and not looks_like_list or default is not None and _fits(value, default):
            continue
        wanted = "a list" if default is None else _form(default)
        got = f"the string {value!r}" if as_text else repr(value)
        shown = f"[{value.strip()[1:-1]}]" if looks_like_list else ""  # YAML has no tuples
        hint = f'; pass lists with -y "{name}: {shown}"' if looks_like_list else ""
        raise ValueError(f"parameter {name} must be {wanted}, got {got}{hint}")


def add_dataclass_flags(group: Any, cls: type, choices: Dict[str, Tuple[Any, ...]], *,
                        skip: Sequence[str] = ()) -> None:
    """One ``--field-name`` flag per field of the dataclass ``cls``, parsed by its type hint (``none``
    for an Optional, ``a,b`` for a tuple, ``true``/``false`` for a bool); a flag left out keeps the
    caller's default (``argparse.SUPPRESS``), even where ``none`` is a valid value."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        hint = hints[f.name]
        allowed = choices.get(f.name)
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=argparse.SUPPRESS,
                           type=lambda text, hint=hint: parse_value(text, hint), metavar=metavar(hint),
                           help=None if allowed is None else "one of " + ", ".join(map(str, allowed)))


def parse_value(text: str, hint: Any) -> Any:
    """``text`` from a command line as a value of type ``hint``; an argparse error names the type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        if text.lower() == "none":
            return None
        return parse_value(text, next(a for a in args if a is not type(None)))
    if origin is tuple:
        return tuple(parse_value(t.strip(), args[0]) for t in text.split(",") if t.strip())
    if hint is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {hint.__name__}, got {text!r}") from None
    return text


def metavar(hint: Any) -> str:
    """How ``--help`` shows a value of type ``hint``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        return metavar(next(a for a in args if a is not type(None))) + "|none"
    if origin is tuple:
        return f"{metavar(args[0])},..."
    return {int: "INT", float: "FLOAT", bool: "BOOL", str: "STR"}.get(hint, "VALUE")
