#!/usr/bin/env python3
"""Write man/erofsgen.1 and completions/erofsgen.bash from the command line's argparse definitions.

Usage: tools/gen_docs.py [--check]

The outputs are committed; run this after changing an option or a help text. With --check
nothing is written and the exit status is 1 if a committed file differs from what the parser
gives (the test suite runs that). The output does not depend on the date or the terminal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script: import this checkout's erofsgen

from erofsgen import __version__  # noqa: E402
from erofsgen.cli import COMMANDS, EXIT_ERROR, EXIT_OK, EXIT_PROBLEMS, build_parser, command_parsers  # noqa: E402

MAN_PAGE = ROOT / "man" / "erofsgen.1"
BASH_COMPLETION = ROOT / "completions" / "erofsgen.bash"

MAN_TAIL = rf""".SH EXIT STATUS
.TP
.B {EXIT_OK}
success
.TP
.B {EXIT_PROBLEMS}
\fBcheck\fR found problems, or \fBls\fR could not read some entries
.TP
.B {EXIT_ERROR}
a usage error, bad input, a corrupt image or a missing file; the message is one line on
standard error, \fBerofsgen: error: \fR...
.SH ENVIRONMENT
.TP
.B SOURCE_DATE_EPOCH
\fBpack\fR: the image's build time; newer file modification times are clamped to it
(with \fB\-\-mkfs\-time\fR, only the build time is set). \fB\-T\fR takes precedence.
.TP
.B EROFSGEN_MOUNT
\fBmount\fR: \fBloop\fR mounts through read-only loop devices even where the kernel mounts
image files directly.
.SH SEE ALSO
.BR mkfs.erofs (1),
.BR fsck.erofs (1),
.BR dump.erofs (1),
.BR mount (8)
"""


def roff(text: str) -> str:
    """Text escaped for roff: backslashes, hyphens, non-ASCII, a leading dot or quote on a line."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(ch if ch.isascii() else f"\\[u{ord(ch):04X}]" for ch in text)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.split("\n"))


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": prog}
    return text


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._SubParsersAction)
    ]


def _metavar(action: argparse.Action) -> str:
    metavar = action.metavar if isinstance(action.metavar, str) else None
    return metavar or action.dest.upper()


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def _synopsis(name: str, parser: argparse.ArgumentParser) -> str:
    words = [f"\\fBerofsgen {name}\\fR"]
    if any(action.option_strings for action in _visible(parser)):
        words.append("[\\fIoptions\\fR]")
    for action in _visible(parser):
        if not action.option_strings:
            metavar = f"\\fI{roff(_metavar(action))}\\fR"
            words.append(f"[{metavar}]" if action.nargs == "?" else metavar)
    return " ".join(words)


def _options(parser: argparse.ArgumentParser, prog: str, *, with_help: bool) -> list[str]:
    lines = []
    actions = _visible(parser)
    # Operands first, then options in the order --help lists them.
    for action in sorted(actions, key=lambda action: bool(action.option_strings)):
        if isinstance(action, argparse._HelpAction) and not with_help:
            continue
        if action.option_strings:
            names = ", ".join(f"\\fB{roff(opt)}\\fR" for opt in action.option_strings)
            if _takes_value(action):
                names += f" \\fI{roff(_metavar(action))}\\fR"
        else:
            names = f"\\fI{roff(_metavar(action))}\\fR"
        lines += [".TP", names, roff(_help(action, prog))]
    return lines


def man_page() -> str:
    """The whole erofsgen(1) page."""
    top = build_parser()
    commands = command_parsers(top)
    lines = [
        f'.TH EROFSGEN 1 "" "erofsgen {__version__}" "User Commands"',
        ".SH NAME",
        "erofsgen \\- write and read EROFS filesystem images",
        ".SH SYNOPSIS",
        "\\fBerofsgen\\fR [\\fB\\-\\-version\\fR] [\\fB\\-h\\fR] \\fICOMMAND\\fR [\\fIoptions\\fR]",
    ]
    for name in COMMANDS:
        lines += [".br", _synopsis(name, commands[name])]
    lines += [
        ".SH DESCRIPTION",
        roff(top.description or ""),
        ".SH OPTIONS",
        *_options(top, "erofsgen", with_help=True),
    ]
    lines.append(".SH COMMANDS")
    for name in COMMANDS:
        parser = commands[name]
        lines += [f".SS {name}", roff(parser.description or ""), ".PP", _synopsis(name, parser)]
        lines += _options(parser, parser.prog, with_help=False)
        if parser.epilog:
            lines += [".PP", roff(parser.epilog)]
    return "\n".join(lines) + "\n" + MAN_TAIL


def _bash_case(name: str, parser: argparse.ArgumentParser) -> list[str]:
    options = sorted(opt for action in _visible(parser) for opt in action.option_strings)
    lines = [f"        {name})", f'            opts="{" ".join(options)}"']
    choice_cases = []
    for action in _visible(parser):
        if action.option_strings and action.choices is not None:
            words = " ".join(str(choice) for choice in action.choices)
            pattern = "|".join(action.option_strings)
            choice_cases.append(
                f'                {pattern}) COMPREPLY=($(compgen -W "{words}" -- "$cur")); return ;;'
            )
    if choice_cases:
        lines += ["            case $prev in", *choice_cases, "            esac"]
    lines.append("            ;;")
    return lines


def bash_completion() -> str:
    """A bash completion script: commands, each command's options and choices, then files."""
    top = build_parser()
    commands = command_parsers(top)
    top_words = sorted(opt for action in _visible(top) for opt in action.option_strings)
    lines = [
        "# bash completion for erofsgen; generated by tools/gen_docs.py from the argparse definitions.",
        "_erofsgen() {",
        '    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd="" opts i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        if [[ ${COMP_WORDS[i]} != -* ]]; then cmd=${COMP_WORDS[i]}; break; fi",
        "    done",
        "    case $cmd in",
        '        "")',
        f'            COMPREPLY=($(compgen -W "{" ".join([*top_words, *COMMANDS])}" -- "$cur"))',
        "            return",
        "            ;;",
    ]
    for name in COMMANDS:
        lines += _bash_case(name, commands[name])
    lines += [
        "        *) return ;;",
        "    esac",
        "    if [[ $cur == -* ]]; then",
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        "complete -o filenames -o bashdefault -F _erofsgen erofsgen",
    ]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    return {MAN_PAGE: man_page(), BASH_COMPLETION: bash_completion()}


def main(argv: list[str]) -> int:
    """Write the files, or with --check report the ones that are out of date."""
    parser = argparse.ArgumentParser(description="Generate the man page and shell completion.")
    parser.add_argument("--check", action="store_true", help="only compare with the committed files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
            continue
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    for path in stale:
        print(f"{path} is out of date: run tools/gen_docs.py", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
