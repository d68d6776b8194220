"""The exception hierarchy of layerstore.

Callers test for the kind (the class), never the text. Each exception carries an
``exit_code`` the CLI uses (DESIGN §8): 1 not found, 2 usage, 3 refused by a rule,
4 corruption, 5 a storage error (the disk, the kernel or a driver failed).
"""


class LayerStoreError(Exception):
    """Base of every error layerstore raises on purpose."""

    exit_code = 1


# --- usage / input -------------------------------------------------------------

class InvalidArgument(LayerStoreError):
    """A caller-given value (id, name, digest, option) is malformed."""

    exit_code = 2


# --- lookups --------------------------------------------------------------------

class LayerNotFound(LayerStoreError):
    """No layer has that id, name or prefix."""

    exit_code = 1


class AmbiguousLayer(LayerStoreError):
    """A prefix matches more than one layer id."""

    exit_code = 2


class NoStore(LayerStoreError):
    """There is no store at that root (yet)."""

    exit_code = 1


# --- rules (DESIGN §1) ------------------------------------------------------------

class RuleViolation(LayerStoreError):
    """An operation would break one of the store's rules; nothing was changed."""

    exit_code = 3


class LayerInUse(RuleViolation):
    """The layer is held, mounted, or the parent of another layer."""


class NameInUse(RuleViolation):
    """The name already belongs to another layer."""


class LayerExists(RuleViolation):
    """A layer with that id exists with a different parent."""


class NotHeld(RuleViolation):
    """A release with no matching hold: the count never goes below zero."""


class NotMounted(RuleViolation):
    """An unmount of a layer that is not mounted."""


class LayerIncomplete(RuleViolation):
    """The layer is still being created (or was left half-made)."""


class LayerQuarantined(RuleViolation):
    """Recovery could not repair this layer; it is refused until an operator acts."""


class DigestMismatch(RuleViolation):
    """Content did not match the digest the caller gave."""


class ContentRejected(RuleViolation):
    """A tar stream was refused: malformed, hostile, or over a limit."""


# --- storage --------------------------------------------------------------------

class StorageError(LayerStoreError):
    """The disk, the kernel or a driver failed an operation (exit 5: not a "no")."""

    exit_code = 5


class ReadModelDamaged(StorageError):
    """SQLite says ``index.db`` is damaged. It is derived data: set aside and rebuilt
    from the log; the operation that met the damage changed nothing."""


class DriverError(StorageError):
    """A storage driver could not do what was asked."""


class LogClosed(StorageError):
    """The log handle is unusable (closed, or a failed fsync poisoned it)."""


class CorruptLog(LayerStoreError):
    """The log is damaged somewhere other than a torn tail; nothing was changed.

    ``segment`` and ``offset`` name the first damaged byte.
    """

    exit_code = 4

    def __init__(self, message: str, segment: str | None = None, offset: int | None = None):
        super().__init__(message)
        self.segment = segment
        self.offset = offset


class LostRecords(CorruptLog):
    """The log ends before records that were acknowledged: derived data (the read
    models, a checkpoint) has seen LSNs ``first_lsn`` to ``last_lsn``, the log no longer
    has them. Never a reason to rebuild from the shorter log."""

    def __init__(self, message: str, first_lsn: int, last_lsn: int):
        super().__init__(message)
        self.first_lsn = first_lsn
        self.last_lsn = last_lsn


class CorruptStore(LayerStoreError):
    """A check found the read models, driver data or content disagreeing with the log."""

    exit_code = 4
