"""containerd's keys as layer names: every name obeys DESIGN §1's rules, the mapping is
one to one, the escaped form decodes back to the key, long keys take the digest form."""

from __future__ import annotations

import hashlib

import pytest

from eventstore.containerd import keys
from eventstore.errors import InvalidArgument
from eventstore.names import MAX_NAME, check_name

TRICKY = [
    "default/12/sha256:4f1c" + "0" * 60,
    "default/11/extract-285119377-Xq3b_Ab-cd= sha256:" + "a" * 64,
    "k8s.io/40/" + "c" * 64,
    "/tmp/snapshot-suite-overlay-123/work/preparing",
    "100%", "%2F", "%252F", "a%2Fb", "a/b", "a%b/c",
    ".", "..", "...", "../../etc/passwd", "a..b", "./.", "x/..",
    "é/名前/🐳", "\u2028line", "\u00a0nbsp", "tab\there", "nul\x00byte", "del\x7f", "esc\x1b[31m",
    " leading space", "trailing space ", "containerd:already-prefixed", "containerd@" + "0" * 64,
    "a" * 243, "a" * 244, "a" * 1000, "/" * 100, "." * 300,
]


@pytest.mark.parametrize("key", TRICKY, ids=range(len(TRICKY)))
def test_every_key_maps_to_a_valid_name(key):
    name = keys.name_for(key)
    assert check_name(name) == name
    assert name.isprintable() and len(name) <= MAX_NAME


def test_the_mapping_is_one_to_one():
    names = [keys.name_for(k) for k in TRICKY]
    assert len(set(names)) == len(TRICKY)


@pytest.mark.parametrize("key", [k for k in TRICKY if len(keys.ESCAPED_PREFIX + keys.escape(k)) <= MAX_NAME])
def test_escaped_names_decode_to_their_key(key):
    name = keys.name_for(key)
    assert name.startswith(keys.ESCAPED_PREFIX)
    assert keys.key_from_name(name) == key


def test_readable_where_it_can_be():
    assert keys.name_for("default/12/sha256:abc") == "containerd:default%2F12%2Fsha256:abc"
    assert keys.name_for("k8s.io/1/x") == "containerd:k8s.io%2F1%2Fx"
    assert keys.name_for("a..b") == "containerd:a.%2Eb"


def test_a_key_too_long_to_escape_is_named_by_its_digest():
    key = "default/1/" + "x" * 1000
    assert keys.name_for(key) == "containerd@" + hashlib.sha256(key.encode()).hexdigest()
    assert keys.key_from_name(keys.name_for(key)) is None
    # the boundary: 244 plain characters fit with the 11-character prefix, 245 do not
    assert keys.name_for("a" * 244).startswith("containerd:")
    assert keys.name_for("a" * 245).startswith("containerd@")
    # escaping can push a short key over
    assert keys.name_for("/" * 82).startswith("containerd@")


def test_names_of_other_layers_are_no_snapshot_keys():
    assert keys.key_from_name("app:v1") is None


@pytest.mark.parametrize("bad", ["", "x" * (keys.MAX_KEY_BYTES + 1), "é" * 2049, "lone\ud800surrogate"])
def test_unusable_keys_are_invalid_arguments(bad):
    with pytest.raises(InvalidArgument):
        keys.check_key(bad)
