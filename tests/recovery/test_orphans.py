"""Driver data no event accounts for (orphans): moved to lost+found — never deleted — by
``layerstore recover`` and by the first open of a new boot, never a layer the log knows."""

from __future__ import annotations

from pathlib import Path

from eventstore.opener import open_store
from replay.verify import check

from .support import cli_ok, diff_dir, driver_dir, events_after, in_lost_found, last_lsn_on_disk, new_id, summary


def make_orphans(root: Path, driver: str) -> tuple[str, str]:
    """A driver directory (with a file in it) and a tar-split, made by hand."""
    in_driver, in_tarsplit = new_id(), new_id()
    diff = diff_dir(root, driver, in_driver)
    diff.mkdir(parents=True)
    (diff / "leftover").write_bytes(b"no event made me\n")
    (root / "tarsplit").mkdir(exist_ok=True)
    (root / "tarsplit" / f"{in_tarsplit}.tar-split").write_bytes(b"stale")
    return in_driver, in_tarsplit


def test_orphans_are_removed_by_the_recover_command(made: Path, driver: str):
    with open_store(made) as store:
        kept = store.create(names=["kept"])
    in_driver, in_tarsplit = make_orphans(made, driver)

    with open_store(made) as store:  # same boot, already swept: an open does not list the driver
        assert events_after(store, 0)[-1].type_name == "layer-completed"
    assert driver_dir(made, driver, in_driver).is_dir()

    before = last_lsn_on_disk(made)
    out = cli_ok(made, "recover")
    assert f"moved driver data {in_driver}" in out
    assert f"moved tar-split {in_tarsplit}.tar-split" in out
    assert not driver_dir(made, driver, in_driver).exists()
    assert not (made / "tarsplit" / f"{in_tarsplit}.tar-split").exists()
    kept_driver, kept_tarsplit = in_lost_found(made, in_driver), in_lost_found(made, f"{in_tarsplit}.tar-split")
    assert (kept_driver / ("diff/leftover" if driver == "overlay" else "leftover")).read_bytes() == \
        b"no event made me\n"
    assert kept_tarsplit.read_bytes() == b"stale"
    with open_store(made) as store:
        events = events_after(store, before)
        assert summary(events) == [("recovery-started", None), ("data-moved-aside", in_driver),
                                   ("data-moved-aside", in_tarsplit), ("recovery-finished", None)]
        assert [e.what for e in events[1:3]] == ["driver data", "tar-split"]
        assert [e.path for e in events[1:3]] == [kept_driver.name, kept_tarsplit.name]
        assert events[-1].actions == 2
        assert store.lookup("kept").id == kept and store.driver.exists(kept)
        assert check(store) == []


def test_orphans_are_swept_on_the_first_open_of_a_new_boot(made: Path, driver: str, monkeypatch):
    with open_store(made) as store:
        kept = store.create()
    in_driver, _ = make_orphans(made, driver)
    monkeypatch.setenv("LAYERSTORE_BOOT_ID", "the-next-boot")
    before = last_lsn_on_disk(made)
    with open_store(made) as store:
        assert summary(events_after(store, before))[0] == ("recovery-started", None)
        assert ("data-moved-aside", in_driver) in summary(events_after(store, before))
        assert summary(events_after(store, before))[-1] == ("recovery-finished", None)
        assert store.driver.exists(kept)
    assert not driver_dir(made, driver, in_driver).exists() and in_lost_found(made, in_driver)
    assert list((made / "tarsplit").iterdir()) == []
    with open_store(made) as store:  # swept once for this boot
        assert store.log.last_lsn == before + 4  # started, two orphans, finished
