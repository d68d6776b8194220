"""Events: every type round-trips through a log payload, and records written by an
older version still decode (the compatibility rule of eventstore/events.py)."""

from __future__ import annotations

import os

import msgspec
import msgspec.inspect as mi
import pytest

from eventstore.events import (
    EVENT_TYPES, Actor, Event, Holder, LayerCreated, LayerMarkedIncomplete, decode_batch,
    encode_batch, stamp, to_builtins,
)

# Written once by msgspec's msgpack encoder from hand-built maps: a LayerCreated from
# before ``mount_label`` existed and a LayerMarkedIncomplete from before ``owner``.
# Never regenerate it: it stands for the logs already on disks.
OLD_PAYLOAD = (
    b"\x92\x89\xa4type\xadlayer-created\xa5layer\xd9@c3b1d2e4f5a697881234567890123"
    b"4567890abcdefabcdefabcdefabcdef0123\xa6parent\xd9@0f1e2d3c4b5a69788796a5b4c3"
    b"d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0\xa5names\x91\xa6app:v1\xa8writable"
    b"\xc3\xa6driver\xa7overlay\xa5owner\x83\xa3pid\xcd\x10\x92\xa5start\xce:\xdeh"
    b"\xb1\xa4boot\xd9$6f1c3a52-8f0e-4b7d-9a1e-2c4d5e6f7a8b\xa4time\xcf\x18{\xf27"
    b"\xb5<\xad\x15\xa5actor\x83\xa3pid\xcd\x10\x92\xa3uid\xcd\x03\xe8\xa7program"
    b"\xaalayerstore\x85\xa4type\xb7layer-marked-incomplete\xa5layer\xd9@c3b1d2e4f"
    b"5a6978812345678901234567890abcdefabcdefabcdefabcdef0123\xa6reason\xa6delete"
    b"\xa4time\xcf\x18{\xf27\xbb2\x8e\x15\xa5actor\x83\xa3pid\xcd\x10\x92\xa3uid"
    b"\xcd\x03\xe8\xa7program\xaalayerstore"
)
LAYER = "c3b1d2e4f5a6978812345678901234567890abcdefabcdefabcdefabcdef0123"
PARENT = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
ACTOR = Actor(pid=4242, uid=1000, program="layerstore")


def test_record_written_before_newer_fields_still_decodes_with_their_defaults():
    created, marked = decode_batch(OLD_PAYLOAD)
    assert created == LayerCreated(
        layer=LAYER, parent=PARENT, names=["app:v1"], writable=True, driver="overlay",
        owner=Holder(pid=4242, start=987654321, boot="6f1c3a52-8f0e-4b7d-9a1e-2c4d5e6f7a8b"),
        time=1764270000123456789, actor=ACTOR)
    assert created.mount_label == ""
    assert marked.layer == LAYER and marked.reason == "delete" and marked.time == 1764270000223456789
    assert isinstance(marked, LayerMarkedIncomplete)
    assert getattr(marked, "owner", None) is None


def sample(t: mi.Type, name: str):
    """A value of type ``t`` that is no field's default."""
    if isinstance(t, mi.StrType):
        return f"{name}-value"
    if isinstance(t, mi.BoolType):
        return True
    if isinstance(t, mi.IntType):
        return 7
    if isinstance(t, mi.FloatType):
        return 1.5
    if isinstance(t, mi.ListType):
        return [sample(t.item_type, name), sample(t.item_type, name + "-2")]
    if isinstance(t, mi.DictType):
        return {sample(t.key_type, name): sample(t.value_type, name)}
    if isinstance(t, mi.UnionType):
        return sample(next(u for u in t.types if not isinstance(u, mi.NoneType)), name)
    if isinstance(t, mi.LiteralType):
        return t.values[-1]
    if isinstance(t, mi.StructType):
        return t.cls(**{f.name: sample(f.type, f.name) for f in t.fields})
    raise NotImplementedError(f"teach sample() the field type {t!r} of {name}")


def full_event(cls: type[Event]) -> Event:
    """An instance of ``cls`` with every field set, none to its default."""
    info = mi.type_info(cls)
    return cls(**{f.name: sample(f.type, f.name) for f in info.fields})


@pytest.mark.parametrize("tag", sorted(EVENT_TYPES))
def test_every_event_type_round_trips_with_every_field_set(tag):
    event = full_event(EVENT_TYPES[tag])
    assert event.type_name == tag
    [decoded] = decode_batch(encode_batch([event]))
    assert decoded == event and type(decoded) is type(event)
    assert to_builtins(event)["type"] == tag


def test_batch_of_every_type_round_trips_in_order():
    batch = [full_event(cls) for cls in EVENT_TYPES.values()]
    assert decode_batch(encode_batch(batch)) == batch


def test_defaults_are_left_out_of_the_payload():
    assert msgspec.msgpack.decode(encode_batch([LayerCreated(layer="x")])) == [
        {"type": "layer-created", "layer": "x"}]


def test_unknown_event_type_does_not_decode():
    with pytest.raises(msgspec.DecodeError):
        decode_batch(msgspec.msgpack.encode([{"type": "layer-exploded", "layer": "x"}]))


def test_stamp_fills_time_and_actor_only_when_missing():
    event = stamp(LayerCreated(layer="x"))
    assert event.time > 0 and event.actor.pid == os.getpid() and event.actor.uid == os.getuid()
    given = LayerCreated(layer="y", time=5, actor=ACTOR)
    assert stamp(given) == LayerCreated(layer="y", time=5, actor=ACTOR)
