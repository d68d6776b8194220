"""Write layerstore(1), the man page, from the CLI's own command table.

    python tools/manpage.py [-o build/man/layerstore.1]      (make man)

Every command, its description, its arguments and their help lines come from the
``@command`` declarations in eventstore/cli.py and eventstore/cli_layers.py: the page
cannot fall behind the parser. ``man -l build/man/layerstore.1`` reads it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from eventstore import __version__  # noqa: E402
from eventstore.cli import COMMANDS, JSON_HELP, load_commands  # noqa: E402

ENVIRONMENT = [
    ("LAYERSTORE_ROOT", "the store root when --root is not given"),
    ("LAYERSTORE_DRIVER", "the driver of a new store when --driver is not given"),
    ("LAYERSTORE_CONFIG", "one config file to read instead of the system's and the user's"),
    ("XDG_CONFIG_HOME", "where the user's config file is (default ~/.config)"),
    ("LAYERSTORE_FAILPOINTS", "failpoints to arm, for crash tests (see layerstore failpoints)"),
]
FILES = [
    ("/etc/layerstore/layerstore.toml", "the system's config: [storage] root, driver, [storage.options.DRIVER]"),
    ("$XDG_CONFIG_HOME/layerstore/layerstore.toml", "the user's config, read after the system's"),
    ("/var/lib/layerstore", "the default store root for root"),
]
EXIT_CODES = [("0", "success"), ("1", "no: not found, or exists says no"), ("2", "usage: bad arguments"),
              ("3", "refused by a rule: held, mounted, a parent, name taken, ..."),
              ("4", "corruption: the log is damaged, or check found a disagreement"),
              ("5", "a storage error: the disk, the kernel or a driver failed")]


def roff(text: str) -> str:
    """Text safe in a roff line: backslashes and hyphens escaped, no leading dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def command_parser(cmd) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"layerstore {cmd.name}", add_help=False)
    for a in cmd.arguments:
        parser.add_argument(*a.flags, **a.options)
    parser.add_argument("--json", "-j", action="store_true", help=JSON_HELP)
    return parser


def option_lines(cmd) -> list[str]:
    lines = []
    for a in cmd.arguments:
        options = a.options
        if options.get("help") is None:
            continue
        metavar = options.get("metavar") or (options.get("dest") or a.flags[0].lstrip("-")).upper()
        takes_value = options.get("action") not in ("store_true", "store_const", "append_const", "count")
        shown = ", ".join(f"\\fB{roff(flag)}\\fR" for flag in a.flags) if a.flags[0].startswith("-") \
            else f"\\fI{roff(metavar)}\\fR"
        if a.flags[0].startswith("-") and takes_value:
            shown += f" \\fI{roff(metavar)}\\fR"
        lines += [".TP", shown, roff(options["help"])]
    return lines


def page() -> str:
    load_commands(None)
    declared = list(dict.fromkeys(COMMANDS.values()))
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = [f'.TH LAYERSTORE 1 "{date}" "layerstore {__version__}" "User Commands"',
           ".SH NAME", "layerstore \\- a crash\\-safe, event\\-sourced store of OCI image layers",
           ".SH SYNOPSIS", "\\fBlayerstore\\fR [\\fB\\-\\-root\\fR \\fIDIR\\fR] [\\fB\\-\\-driver\\fR \\fINAME\\fR] "
           "[\\fB\\-\\-json\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
           ".SH DESCRIPTION",
           roff("layerstore keeps OCI image layers on a node: it creates them from tar diffs, counts who holds "
                "them, mounts them through a storage driver (overlay, vfs), finds them by digest and deletes them. "
                "Every change is an event appended to a durable write-ahead log; the state, the read models, "
                "recovery and the audit trail derive from it. Its commands follow containers-storage(1)."),
           ".SH GLOBAL OPTIONS",
           ".TP", "\\fB\\-\\-root\\fR, \\fB\\-g\\fR, \\fB\\-\\-graph\\fR \\fIDIR\\fR", "the store root",
           ".TP", "\\fB\\-\\-driver\\fR, \\fB\\-s\\fR, \\fB\\-\\-storage\\-driver\\fR \\fINAME\\fR",
           "the driver of a new store: overlay or vfs",
           ".TP", "\\fB\\-\\-json\\fR, \\fB\\-j\\fR", roff(JSON_HELP),
           ".TP", "\\fB\\-\\-version\\fR", "print the version and exit",
           ".SH COMMANDS"]
    for cmd in declared:
        usage = " ".join(command_parser(cmd).format_usage().split())[len("usage: "):]
        aliases = f" (also: {', '.join(cmd.aliases)})" if cmd.aliases else ""
        out += [f".SS {roff(cmd.name)}", f"\\fB{roff(usage)}\\fR", ".PP", roff(cmd.help + aliases), ".RS"]
        out += option_lines(cmd)
        out.append(".RE")
    for title, rows in (("ENVIRONMENT", ENVIRONMENT), ("FILES", FILES), ("EXIT STATUS", EXIT_CODES)):
        out.append(f".SH {title}")
        for name, text in rows:
            out += [".TP", f"\\fB{roff(name)}\\fR", roff(text)]
    out += [".SH SEE ALSO", "containers\\-storage(1), podman(1), overlayfs documentation", ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(REPO / "build" / "man" / "layerstore.1"),
                        help="where to write the page")
    args = parser.parse_args()
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page())
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
