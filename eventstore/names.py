"""Validating what callers name things with: layer ids, names, leases, tags, digests.

One rule for every piece of text a caller hands the store (``check_text``): no
character of the Unicode classes Cc (C0 and C1 controls: ESC, CSI U+009B, NEL
U+0085), Cf (format: bidi overrides U+202A-U+202E and isolates U+2066-U+2069,
zero-width joiners, the BOM), Zl and Zp (U+2028, U+2029), and Cs (lone surrogates:
what undecodable bytes in a command line become; they cannot be written as UTF-8).
Such characters inject terminal escapes, reorder what a reader sees, and break
line-oriented output. Every id, name, lease, tag and label goes through it.

``shown`` is the other half: text put in a message is escaped, so even a value the
store never accepted (a ref that matched nothing, a tag in a hostile image) reaches a
terminal as plain characters.
"""

from __future__ import annotations

import re
import unicodedata

from eventstore.errors import InvalidArgument

ID_RE = re.compile(r"[0-9a-f]{64}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_NAME = 255
MAX_TAG = 255
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def forbidden_char(text: str) -> str | None:
    """The first character of ``text`` no caller-given text may hold, else None."""
    if text.isascii():  # the common case: only C0 controls and DEL can be wrong
        for c in text:
            if c < " " or c == "\x7f":
                return c
        return None
    for c in text:
        if unicodedata.category(c) in FORBIDDEN_CATEGORIES:
            return c
    return None


def check_text(text: str, what: str) -> str:
    """``text`` when it holds no control, format, line/paragraph separator or surrogate
    character; else InvalidArgument naming the character (the one rule, see above)."""
    bad = forbidden_char(text)
    if bad is not None:
        kind = "undecodable byte" if unicodedata.category(bad) == "Cs" else \
            f"{unicodedata.name(bad, 'control')} character"
        raise InvalidArgument(f"invalid {what} {text!r}: holds U+{ord(bad):04X} ({kind.lower()}); "
                              "control, format and separator characters are not allowed")
    return text


def shown(text: object) -> str:
    """``text`` with every character a terminal would act on escaped (as ``repr`` does,
    without the quotes): safe to print, one line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def check_id(layer_id: str) -> str:
    """A layer id is 64 lowercase hex digits, like containers/storage's."""
    if not isinstance(layer_id, str) or not ID_RE.fullmatch(layer_id):
        raise InvalidArgument(f"invalid layer id {layer_id!r}: want 64 lowercase hex digits")
    return layer_id


def check_name(name: str, what: str = "name") -> str:
    """Names and leases: at most 255 characters, no '/', no '..', and nothing
    ``check_text`` refuses (they end up in paths, logs and terminals)."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InvalidArgument(f"invalid {what} {name!r}: must be 1 to {MAX_NAME} characters")
    check_text(name, what)
    if "/" in name or ".." in name:
        raise InvalidArgument(f"invalid {what} {name!r}: no '/' or '..'")
    return name


def check_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """Every name valid, and none given twice (a name belongs to one layer, once)."""
    if isinstance(names, str):
        raise InvalidArgument(f"names must be a list of names, not the string {names!r}")
    checked = [check_name(n) for n in names]
    seen: set[str] = set()
    for name in checked:
        if name in seen:
            raise InvalidArgument(f"name {name!r} given twice")
        seen.add(name)
    return checked


def check_tag(tag: str) -> str:
    """An OCI reference name (``org.opencontainers.image.ref.name``): 1 to 255
    characters, nothing ``check_text`` refuses. '/' and ':' are allowed: some tools
    write whole references there."""
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG:
        raise InvalidArgument(f"invalid tag {tag!r}: must be 1 to {MAX_TAG} characters")
    return check_text(tag, "tag")


def check_mount_label(label: str) -> str:
    """A mount label goes into overlay's options as ``context="LABEL"``: printable
    ASCII without '"' or '\\', or it could end the quoted value and add options."""
    if not isinstance(label, str) or not label.isascii() or not label.isprintable() \
            or '"' in label or "\\" in label or len(label) > 4096:
        raise InvalidArgument(f"invalid mount label {label!r}: printable ASCII without '\"' or '\\'")
    return label


def check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 hex digits>")
    return digest
