"""One of several processes driving the CLI on one store root at once.

    python concurrent_worker.py ROOT WORKER SEED OPERATIONS OUT.json

Runs OPERATIONS random operations through the real CLI and writes every call (command,
exit code, output) to OUT.json. Which layers it knows of it learns from its own creates
and from ``layers``; it releases only leases it took and unmounts only what it mounted,
so those must always succeed. Everything else may be refused by a rule another worker's
operation made true (a parent deleted, a layer held): that is recorded, not an error.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.cli.support import cli_command, cli_env  # noqa: E402


def main() -> int:
    root, worker, seed, operations, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rng = random.Random(seed)
    env = cli_env()
    known: list[str] = []
    leases: dict[str, str] = {}  # lease -> layer, every lease this worker holds
    mounted: Counter[str] = Counter()  # layer -> mounts this worker made and has not undone
    calls = []

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(cli_command(Path(root), *args), env=env, capture_output=True, text=True,
                                timeout=120)
        calls.append({"args": list(args), "code": result.returncode, "out": result.stdout,
                      "err": result.stderr})
        return result

    for n in range(operations):
        kind = rng.choices(["create", "hold", "release", "mount", "umount", "delete", "layers"],
                           weights=[30, 14, 12, 12, 12, 12, 8])[0]
        if kind in ("hold", "mount", "delete") and not known:
            kind = "create"
        if kind == "release" and not leases:
            kind = "hold" if known else "create"
        if kind == "umount" and not +mounted:
            kind = "mount" if known else "create"

        if kind == "create":
            args = ["create"]
            if known and rng.random() < 0.6:
                args += ["--parent", rng.choice(known)]
            if rng.random() < 0.3:
                args += ["--name", f"w{worker}-n{n}"]
            if rng.random() < 0.5:
                args.append("--writable")
            result = run(*args)
            if result.returncode == 0:
                known.append(result.stdout.strip())
        elif kind == "hold":
            layer, lease = rng.choice(known), f"w{worker}-l{n}"
            if run("hold", layer, "--lease", lease).returncode == 0:
                leases[lease] = layer
        elif kind == "release":
            lease = rng.choice(sorted(leases))
            if run("release", leases[lease], "--lease", lease).returncode == 0:
                del leases[lease]
        elif kind == "mount":
            layer = rng.choice(known)
            if run("mount", layer).returncode == 0:
                mounted[layer] += 1
        elif kind == "umount":
            layer = rng.choice(sorted(+mounted))
            if run("umount", layer).returncode == 0:
                mounted[layer] -= 1
        elif kind == "delete":
            layer = rng.choice(known)
            result = run("delete", layer)
            if result.returncode in (0, 1):  # gone: by us, or by someone else before
                known.remove(layer)
        else:
            result = run("layers")
            if result.returncode == 0:  # one layer a line: "ID  NAMES [incomplete]"
                known = [line.split()[0] for line in result.stdout.splitlines() if "[incomplete]" not in line]

    Path(out).write_text(json.dumps({"worker": worker, "calls": calls}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
