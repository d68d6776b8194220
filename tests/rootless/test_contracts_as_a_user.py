"""The driver contract and the store contract, unchanged, on fuse-overlayfs, run by an
unprivileged user as root of its own user namespace (``unshare --user --map-root-user
--mount``): a child pytest as that user, whose every contract test must pass."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .support import REPO, User

MODULES = ("tests/drivers/test_fuse_overlay.py", "tests/store/test_fuse_overlay.py")
CONTRACT_CLASSES = ("TestFuseOverlayContract", "TestFuseOverlayStore")


def outcomes(report) -> dict[str, str]:
    """test id -> passed | failed | skipped, from a junit XML report."""
    found = {}
    for case in ET.parse(report).iter("testcase"):
        kind = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        found[f"{case.get('classname')}::{case.get('name')}"] = kind
    return found


def test_the_contract_suites_pass_on_fuse_overlayfs_as_a_user_in_a_user_namespace(user: User):
    report = user.home / "report.xml"
    argv = [user.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={REPO}",
            "-c", str(REPO / "pyproject.toml"), f"--basetemp={user.home / 'pytest'}", f"--junitxml={report}",
            *(str(REPO / m) for m in MODULES)]
    done = user.run(argv, userns=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    results = outcomes(report)
    contract = {name: kind for name, kind in results.items() if name.split("::")[0].endswith(CONTRACT_CLASSES)}
    assert len(contract) > 80  # both suites were collected, whole
    assert set(contract.values()) == {"passed"}, {n: k for n, k in contract.items() if k != "passed"}
