"""containerd's filter syntax (``filters/parser.go``): what parses, what matches, what
is an InvalidArgument."""

from __future__ import annotations

import pytest

from eventstore.containerd.filters import matcher, parse
from eventstore.errors import InvalidArgument

SNAPSHOT = {("kind",): "active", ("name",): "default/3/c1", ("parent",): "default/2/sha256:abc"}
LABELS = {"containerd.io/gc.root": "x", "l": "2", "a b": "has space", "empty": ""}


def fields(path: tuple[str, ...]) -> tuple[str, bool]:
    if path in SNAPSHOT:
        return SNAPSHOT[path], True
    if path[0] == "labels" and len(path) > 1:
        label = ".".join(path[1:])
        return LABELS.get(label, ""), label in LABELS
    return "", False


@pytest.mark.parametrize("filters,matches", [
    ([], True),
    ([""], True),
    (["kind==active"], True),
    (["kind==view"], False),
    (["kind!=view"], True),
    (["kind == active"], True),
    (['name=="default/3/c1"'], True),
    (["name==default/3/c1"], True),
    (['parent=="default/2/sha256:abc"'], True),
    (['parent!=""'], True),
    (["labels.l"], True),
    (["labels.missing"], False),
    (["labels.missing!=x"], True),  # != matches what is absent
    (['labels."containerd.io/gc.root"==x'], True),
    (['labels."a b"=="has space"'], True),
    (["kind==active,labels.l==2"], True),
    (["kind==active,labels.l==3"], False),
    (["kind==view", "labels.l==2"], True),  # several filters: any
    (["name~=^default/"], True),
    (["name~=/c[0-9]$/"], True),
    (["name~=|^k8s|"], False),
    (['labels."\\x6c"==2'], True),  # Go escapes in quoted strings
    (["nosuchfield"], False),
])
def test_matches(filters, matches):
    assert matcher(filters)(fields) is matches


def test_parse_gives_field_paths_operators_and_values():
    (sel,) = parse('labels."containerd.io/snapshot.ref"==sha256:abc')
    assert (sel.path, sel.operator, sel.value) == (("labels", "containerd.io/snapshot.ref"), "==", "sha256:abc")
    first, second = parse('labels."containerd.io/snapshot.ref"==x,parent=="default/1/y"')
    assert second.path == ("parent",) and second.value == "default/1/y"


@pytest.mark.parametrize("bad", [
    "kind=active", "kind===active", "==x", "kind==", 'name=="open', "name==/a/", "a,", ",a", "a..b",
    'labels."\\q"', "name~=/(/", "labels.containerd.io/gc.root==x", "kind==a b", 'labels."x\ny"',
])
def test_malformed_filters_are_invalid_arguments(bad):
    with pytest.raises(InvalidArgument) as caught:
        matcher([bad])
    assert "\n" not in str(caught.value)
