"""A hypothesis state machine that drives the real store and the reference model side by
side (``replay.model``): subclass ``StoreMachine``, set ``driver``, run it.

Rules cover every operation, with bad inputs on purpose (unknown ids, ambiguous
prefixes, hostile names and leases, release at zero, deletes of held, mounted and
parent layers, taken names): the store and the model must succeed alike or fail with
the same error class. One rule runs an operation in a child process with a failpoint
armed (a real process death, or a power loss), reopens the store, and lets the model
fall back to the last acknowledged state. After every step the store and the model
must agree on the list, lookups by id, name and prefix, digests, holds and mount
counts, and the read models must equal the fold of the log.

    from replay.stateful import StoreMachine

    class MyDriverMachine(StoreMachine):
        driver = "mydriver"
        driver_modules = ["mypkg.drivers:MyDriver"]   # registered in the children too

    TestMyDriver = MyDriverMachine.TestCase

Hypothesis is needed (``pip install layerstore[test]``); the machine needs a scratch
directory (``StoreMachine.scratch``, default: the system's temporary directory).
"""

from __future__ import annotations

import hashlib
import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from eventstore import errors
from eventstore.faults import CRASH_EXIT_CODE
from replay.invariants import check_acknowledged, crash_outcomes
from replay.model import Model, Op, describe_difference, observe_store
from replay.workload import (FIXTURES, WRONG_DIGEST, archive_available, content_of, load_driver_modules,
                             normalize, read_acks)

REPO = Path(__file__).resolve().parent.parent

# ids that share prefixes, so that prefixes are unique, ambiguous or unknown by turns
ID_POOL = [prefix + hashlib.sha256(str(i).encode()).hexdigest()[len(prefix):]
           for i, prefix in enumerate(["aa", "aa", "ab", "ab", "b", "c0", "c1", "d"])]
# names that look like ids or prefixes too: lookups try id, then name, then prefix
NAME_POOL = ["web", "db", "base", "aa", "c", "x.y", "名前"]
HOSTILE = ["", "..", "../etc", "a/b", "nul\x00byte", "tab\tname", "del\x7f", "x" * 256]
LEASES = ["build", "ci"]


def _fixtures() -> dict:
    return {name: (make(), content_of(make())) for name, make in FIXTURES.items()}


class StoreMachine(RuleBasedStateMachine):
    """The store (``driver``) and the model, step by step."""

    driver = "vfs"
    driver_modules: list[str] = []
    scratch: str | None = None  # where roots go (a tmpfs makes the machine much faster)
    max_crashes = 1  # of each kind (creating, other) per example: each costs a process start
    content = True  # creates from tar fixtures (when eventstore.archive is there)

    def __init__(self) -> None:
        super().__init__()
        from eventstore.opener import open_store

        load_driver_modules(self.driver, self.driver_modules)
        self.generated = 0

        def reopen():
            store = open_store(self.root, self.driver)
            # the ids the store picks, made repeatable: hypothesis replays an example
            # draw for draw, and a random id (a new prefix) would change what follows
            store._new_id = self._next_generated_id
            return store

        self._open_store = reopen
        self.workdir = Path(tempfile.mkdtemp(prefix="layerstore-stateful-", dir=self.scratch))
        self.root = self.workdir / "root"
        self.saved_boot = os.environ.get("LAYERSTORE_BOOT_ID")
        self.boots = 0
        self.store = self._open_store()
        self.model = Model()
        self.crashes = {"create": 0, "other": 0}
        self.fixtures = _fixtures() if self.content and archive_available() else {}

    def _next_generated_id(self) -> str:
        while True:
            self.generated += 1
            layer_id = hashlib.sha256(f"generated-{self.generated}".encode()).hexdigest()
            if layer_id not in self.model.layers:
                return layer_id

    def teardown(self) -> None:
        from eventstore.mounts import detach_all

        try:
            self.store.close()
        finally:
            detach_all(str(self.workdir))
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self.saved_boot is None:
                os.environ.pop("LAYERSTORE_BOOT_ID", None)
            else:
                os.environ["LAYERSTORE_BOOT_ID"] = self.saved_boot

    # --- what to draw ------------------------------------------------------------------------

    def refs(self) -> st.SearchStrategy[str]:
        """Any way of naming a layer: ids, names, prefixes (unique or not), unknown, hostile."""
        ids = list(self.model.layers)
        names = [n for layer in self.model.layers.values() for n in layer.names]
        options = [st.sampled_from(ID_POOL), st.sampled_from(HOSTILE),
                   st.text("0123456789abcdef", min_size=1, max_size=3)]
        if ids:
            options += [st.sampled_from(ids)] * 3
            options.append(st.tuples(st.sampled_from(ids), st.integers(1, 8)).map(lambda t: t[0][:t[1]]))
        if names:
            options += [st.sampled_from(names)] * 2
        return st.one_of(options)

    def names(self) -> st.SearchStrategy[list[str]]:
        return st.lists(st.one_of(st.sampled_from(NAME_POOL), st.sampled_from(HOSTILE).filter(bool)),
                        max_size=2, unique=True) | st.lists(st.sampled_from(NAME_POOL), max_size=2, unique=True)

    def leases(self) -> st.SearchStrategy[str | None]:
        return st.one_of(st.none(), st.none(), st.sampled_from(LEASES), st.sampled_from(HOSTILE))

    # --- running one operation on both ---------------------------------------------------------

    def both(self, kind: str, store_call, model_call) -> object:
        """Run the store's call and the model's; they must agree on result or error class."""
        try:
            got, got_error = store_call(), None
        except errors.LayerStoreError as exc:
            got, got_error = None, exc
        try:
            want, want_error = model_call(), None
        except errors.LayerStoreError as exc:
            want, want_error = None, exc
        assert type(got_error) is type(want_error), (
            f"{kind}: the store {'raised ' + repr(got_error) if got_error else 'succeeded'}, "
            f"the model {'raised ' + repr(want_error) if want_error else 'succeeded'}")
        if got_error is None:
            assert normalize(kind, got) == normalize(kind, want), f"{kind}: store {got!r}, model {want!r}"
        return got

    # --- rules -------------------------------------------------------------------------------------

    @rule(data=st.data(), layer_id=st.one_of(st.sampled_from(ID_POOL), st.none(), st.sampled_from(HOSTILE)),
          writable=st.booleans())
    def create(self, data, layer_id, writable):
        parent = data.draw(st.one_of(st.none(), self.refs()), label="parent")
        names = data.draw(self.names(), label="names")
        fixture = data.draw(st.one_of(st.none(), st.sampled_from(sorted(self.fixtures))) if self.fixtures
                            else st.none(), label="tar")
        stream, content = self.fixtures[fixture] if fixture else (None, None)
        digest = data.draw(st.sampled_from([None, "right", "wrong", "malformed"]) if fixture else st.none(),
                           label="diff digest")
        diff_digest = {None: None, "right": content.diff_digest if content else None, "wrong": WRONG_DIGEST,
                       "malformed": "sha256:nothex"}[digest]
        made: list[str] = []

        def store_call():
            made.append(self.store.create(layer_id, parent=parent, names=names, writable=writable,
                                          content=io.BytesIO(stream) if stream else None, diff_digest=diff_digest))
            return made[-1]

        def model_call():
            # the store picks a random id when given none: the model takes the one it picked
            chosen = layer_id if layer_id is not None else (made[0] if made else "f" * 64)
            return self.model.create(chosen, parent=parent, names=names, writable=writable, content=content,
                                     diff_digest=diff_digest)

        self.both("create", store_call, model_call)

    @rule(data=st.data())
    def hold(self, data):
        ref, lease = data.draw(self.refs(), label="ref"), data.draw(self.leases(), label="lease")
        self.both("hold", lambda: self.store.hold(ref, lease=lease), lambda: self.model.hold(ref, lease=lease))

    @rule(data=st.data())
    def release(self, data):
        ref, lease = data.draw(self.refs(), label="ref"), data.draw(self.leases(), label="lease")
        self.both("release", lambda: self.store.release(ref, lease=lease),
                  lambda: self.model.release(ref, lease=lease))

    @rule(data=st.data())
    def set_names(self, data):
        ref, names = data.draw(self.refs(), label="ref"), data.draw(self.names(), label="names")
        self.both("names", lambda: self.store.set_names(ref, names), lambda: self.model.set_names(ref, names))

    @rule(data=st.data(), adding=st.booleans())
    def add_or_remove_names(self, data, adding):
        ref, names = data.draw(self.refs(), label="ref"), data.draw(self.names(), label="names")
        if adding:
            self.both("add_names", lambda: self.store.add_names(ref, names), lambda: self.model.add_names(ref, names))
        else:
            self.both("remove_names", lambda: self.store.remove_names(ref, names),
                      lambda: self.model.remove_names(ref, names))

    @rule(data=st.data(), action=st.sampled_from(["set", "get", "remove"]),
          key=st.sampled_from(["manifest", "signature", "", "bad\nkey"]), value=st.binary(max_size=64))
    def layer_data(self, data, action, key, value):
        ref = data.draw(self.refs(), label="ref")
        if action == "set":
            self.both("set_layer_data", lambda: self.store.set_layer_data(ref, key, value),
                      lambda: self.model.set_layer_data(ref, key, value))
        elif action == "remove":
            self.both("remove_layer_data", lambda: self.store.remove_layer_data(ref, key),
                      lambda: self.model.remove_layer_data(ref, key))
        else:
            got = self.both("layer_data", lambda: self.store.layer_data(ref, key),
                            lambda: self.model.layer_data(ref, key))
            if got is not None:
                assert got == self.model.layer_data(ref, key), f"layer_data({ref!r}, {key!r})"

    @precondition(lambda self: self.fixtures)
    @rule(data=st.data())
    def apply_diff(self, data):
        ref = data.draw(self.refs(), label="ref")
        stream, content = self.fixtures[data.draw(st.sampled_from(sorted(self.fixtures)), label="tar")]
        self.both("apply_diff", lambda: self.store.apply_diff(ref, io.BytesIO(stream)),
                  lambda: self.model.apply_diff(ref, content))

    @rule(data=st.data(), force=st.booleans())
    def delete(self, data, force):
        ref = data.draw(self.refs(), label="ref")
        self.both("delete", lambda: self.store.delete(ref, force=force), lambda: self.model.delete(ref, force=force))

    @rule(data=st.data())
    def mount(self, data):
        ref = data.draw(self.refs(), label="ref")
        self.both("mount", lambda: self.store.mount(ref), lambda: self.model.mount(ref))

    @rule(data=st.data(), force=st.booleans())
    def umount(self, data, force):
        ref = data.draw(self.refs(), label="ref")
        self.both("umount", lambda: self.store.umount(ref, force=force), lambda: self.model.umount(ref, force=force))

    @rule(data=st.data())
    def lookups(self, data):
        ref = data.draw(self.refs(), label="ref")
        self.both("lookup", lambda: self.store.lookup(ref).id, lambda: self.model.lookup(ref).id)
        assert self.store.exists(ref) == self.model.exists(ref), f"exists({ref!r})"
        self.both("hold_refs", lambda: self.store.hold_refs(ref), lambda: self.model.hold_refs(ref))

    @rule(data=st.data(), compressed=st.booleans())
    def by_digest(self, data, compressed):
        known = sorted({c.compressed_digest if compressed else c.diff_digest for _, c in self.fixtures.values()})
        digest = data.draw(st.one_of(st.sampled_from(known or [WRONG_DIGEST]), st.just(WRONG_DIGEST),
                                     st.just("sha256:short"), st.just("")), label="digest")
        self.both("by_digest", lambda: self.store.by_digest(digest, compressed),
                  lambda: self.model.by_digest(digest, compressed))

    @rule()
    def checkpoint(self):
        self.store.checkpoint()

    @rule()
    def reopen(self):
        """Close and open again, alive: recovery finds nothing to do."""
        self.store.close()
        self.store = self._open_store()

    # --- crashes -------------------------------------------------------------------------------------

    def crash_op(self, data, creating: bool) -> tuple[Op, str]:
        """An operation for the child, as a model Op and a workload line (literal refs).

        Mostly one the model says succeeds (a refused one passes few failpoints)."""
        layers = self.model.list()
        held = [la.id for la in layers if la.holds]
        mounted = [la.id for la in layers if la.mount_count]
        parents = {la.parent for la in layers}
        deletable = [la.id for la in layers if not la.holds and la.id not in parents]
        choices = ["create"] if creating else ["checkpoint", "hold", "names", "mount"]
        if not creating:
            choices += ["release"] * 2 * bool(held) + ["umount"] * 2 * bool(mounted) + ["delete"] * 3 * bool(deletable)
        kind = data.draw(st.sampled_from(choices), label="crash op")
        any_layer = st.sampled_from([la.id for la in layers] or ID_POOL)
        if kind == "create":
            new_id = data.draw(st.sampled_from(ID_POOL), label="crash id")
            parent = data.draw(st.one_of(st.none(), any_layer) if layers else st.none(), label="crash parent")
            fixture = data.draw(st.one_of(st.none(), st.sampled_from(sorted(self.fixtures))) if self.fixtures
                                else st.none(), label="crash tar")
            line = f"create ={new_id}" + (f" --parent ={parent}" if parent else "") + (
                f" --tar {fixture}" if fixture else "")
            content = self.fixtures[fixture][1] if fixture else None
            return Op.make("create", layer_id=new_id, parent=parent, names=(), writable=False, content=content,
                           diff_digest=None, compressed_digest=None), line
        if kind in ("hold", "release"):
            ref = data.draw(st.sampled_from(held) if kind == "release" else any_layer, label="crash ref")
            leases = sorted({h[6:] for la in layers if la.id == ref for h in la.holds if h.startswith("lease:")})
            lease = data.draw(st.one_of(st.none(), st.sampled_from(leases or LEASES)), label="crash lease")
            return Op.make(kind, ref=ref, lease=lease), f"{kind} ={ref}" + (f" --lease {lease}" if lease else "")
        if kind == "names":
            ref = data.draw(any_layer, label="crash ref")
            names = data.draw(st.lists(st.sampled_from(NAME_POOL), max_size=2, unique=True), label="crash names")
            return Op.make(kind, ref=ref, names=tuple(names)), " ".join(
                ["names", f"={ref}", *(shlex.quote(n) for n in names)])
        if kind in ("delete", "umount"):
            ref = data.draw(st.sampled_from(deletable if kind == "delete" else mounted), label="crash ref")
            force = data.draw(st.booleans(), label="crash force")
            return Op.make(kind, ref=ref, force=force), f"{kind} ={ref}" + (" --force" if force else "")
        if kind == "mount":
            ref = data.draw(any_layer, label="crash ref")
            return Op.make(kind, ref=ref), f"mount ={ref}"
        return Op.make("checkpoint"), "checkpoint"

    @precondition(lambda self: self.crashes["create"] < self.max_crashes)
    @rule(data=st.data(), passes=st.one_of(st.integers(1, 5), st.integers(1, 30)),
          power_loss=st.sampled_from([None, None, "drop", "random", "torn"]), seed=st.integers(0, 2**16))
    def crash_while_creating(self, data, passes, power_loss, seed):
        """A child process creates a layer and dies at a failpoint (or loses power)."""
        self.crashes["create"] += 1
        self.crash_in_child(data, True, passes, power_loss, seed)

    @precondition(lambda self: self.crashes["other"] < self.max_crashes and self.model.layers)
    @rule(data=st.data(), passes=st.one_of(st.integers(1, 5), st.integers(1, 12)),
          power_loss=st.sampled_from([None, None, "drop", "random", "torn"]), seed=st.integers(0, 2**16))
    def crash_during_an_operation(self, data, passes, power_loss, seed):
        """A child process holds, releases, names, mounts, unmounts, deletes or
        checkpoints, and dies at a failpoint (or loses power)."""
        self.crashes["other"] += 1
        self.crash_in_child(data, False, passes, power_loss, seed)

    def crash_in_child(self, data, creating: bool, passes: int, power_loss: str | None, seed: int) -> None:
        """Run one operation in a child that crashes at its ``passes``-th failpoint;
        reopen; the store must hold the model's last acknowledged state (or the
        operation in flight done, or undone)."""
        op, line = self.crash_op(data, creating)
        self.store.close()
        crashed, acked, in_flight = self.run_child(line, f"@{passes}", power_loss, seed)
        reboot = crashed and power_loss is not None
        if reboot:
            self.boots += 1
            os.environ["LAYERSTORE_BOOT_ID"] = f"stateful-boot-{self.boots}"
        self.store = self._open_store()
        in_flight_op = None
        if 0 in acked:
            problem = check_acknowledged(self.model, op, acked[0], "pid:child")
            assert problem is None, f"{line}: {problem}"
        elif in_flight == 0:
            in_flight_op = op
        candidates = crash_outcomes(self.model, in_flight_op, "pid:child", reboot=reboot, alive=("pid:me",))
        observed = observe_store(self.store)
        for _, model in candidates:
            if model.observe() == observed:
                self.model = model
                break
        else:
            raise AssertionError(f"after a crash at failpoint pass {passes} ({power_loss or 'process crash'}) in "
                                 f"{line!r}: {describe_difference(candidates[-1][1].observe(), observed)}")
        from replay.verify import check

        problems = check(self.store, content=bool(self.fixtures))
        assert not problems, problems

    def run_child(self, line: str, crash_at: str, power_loss: str | None, seed: int):
        """Run ``line`` in ``python -m replay.workload``, crashing at ``crash_at`` ("@N":
        the N-th failpoint passed); (crashed, acks, step in flight)."""
        script, acks = self.workdir / "script", self.workdir / "acks"
        script.write_text(line + "\n")
        acks.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "replay.workload", "run", "--root", str(self.root), "--driver", self.driver,
                "--script", str(script), "--ack", str(acks)]
        for spec in self.driver_modules:
            argv += ["--driver-module", spec]
        env = {k: v for k, v in os.environ.items() if k != "LAYERSTORE_FAILPOINTS"}
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(REPO), os.getcwd(), *filter(
            None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
        if self.scratch:  # children keep compiled modules there, outside the source tree
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(self.scratch) / "pycache")
        argv += ["--crash-at", crash_at]
        if power_loss:
            argv += ["--power-loss", power_loss, "--power-seed", str(seed)]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, CRASH_EXIT_CODE), \
            f"{line!r} failed in the child (exit {done.returncode}):\n{done.stderr}"
        acked, in_flight = read_acks(acks)
        return done.returncode == CRASH_EXIT_CODE, acked, in_flight

    # --- invariants ------------------------------------------------------------------------------------

    @invariant()
    def store_equals_model(self):
        observed, expected = observe_store(self.store), self.model.observe()
        assert observed == expected, describe_difference(expected, observed)
        for layer in self.model.list():
            assert self.store.lookup(layer.id).id == layer.id
            for name in layer.names:
                assert self.store.lookup(name).id == layer.id, f"lookup({name!r})"
            assert self.store.hold_refs(layer.id) == layer.hold_refs
            if layer.content is not None:
                for compressed in (False, True):
                    digest = layer.content.compressed_digest if compressed else layer.content.diff_digest
                    assert self.store.by_digest(digest, compressed) == self.model.by_digest(digest, compressed)

    @invariant()
    def read_models_equal_the_fold_of_the_log(self):
        from replay.verify import check

        assert check(self.store) == []
