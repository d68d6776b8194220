"""``python -m replay.damage.usercli --driver NAME --driver-module MOD[:CLASS] -- ARGS``:
the real ``layerstore`` command (``eventstore.cli.main``) with a user's driver
registered first, so that the damage harness can run the documented commands on a
store made with that driver."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    own, rest = argv[:split], argv[split + 1:]
    p = argparse.ArgumentParser(prog="python -m replay.damage.usercli")
    p.add_argument("--driver", required=True)
    p.add_argument("--driver-module", action="append", default=[])
    args = p.parse_args(own)

    from eventstore.cli import main as cli_main
    from replay.workload import load_driver_modules

    load_driver_modules(args.driver, args.driver_module)
    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main())
