"""The btrfs ioctls the btrfs driver uses, through ``fcntl.ioctl``.

Each call is one syscall on a directory descriptor; the argument structs are the
kernel's (``include/uapi/linux/btrfs.h``): ``btrfs_ioctl_vol_args`` and
``btrfs_ioctl_vol_args_v2`` are 4096 bytes with the name at offset 8 and 56. Errors
are the kernel's, as ``OSError``: the driver turns them into messages.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import uuid

BTRFS_SUPER_MAGIC = 0x9123683E
#: the inode number of every subvolume's root directory
FIRST_FREE_OBJECTID = 256
SUBVOL_RDONLY = 1 << 1
NAME_MAX = 255

_IOC_WRITE, _IOC_READ = 1, 2
_VOL_ARGS_SIZE = 4096
_V2_NAME_OFFSET = 56


def _ioc(direction: int, number: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (0x94 << 8) | number


SUBVOL_CREATE = _ioc(_IOC_WRITE, 14, _VOL_ARGS_SIZE)
SNAP_DESTROY = _ioc(_IOC_WRITE, 15, _VOL_ARGS_SIZE)
INO_LOOKUP = _ioc(_IOC_READ | _IOC_WRITE, 18, 4096)
SNAP_CREATE_V2 = _ioc(_IOC_WRITE, 23, _VOL_ARGS_SIZE)
SUBVOL_GETFLAGS = _ioc(_IOC_READ, 25, 8)
SUBVOL_SETFLAGS = _ioc(_IOC_WRITE, 26, 8)
FS_INFO = _ioc(_IOC_READ, 31, 1024)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]


def filesystem_type(path: str | os.PathLike) -> int:
    """statfs(2)'s ``f_type`` of the filesystem holding ``path`` (its first field on
    every Linux ABI; the buffer is larger than any ``struct statfs``)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(os.fsencode(path), buf) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(path))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _name(name: str) -> bytes:
    raw = os.fsencode(name)
    if not raw or b"/" in raw or b"\0" in raw or len(raw) > NAME_MAX:
        raise ValueError(f"not a subvolume name: {name!r}")
    return raw


def _vol_args(name: str) -> bytearray:
    args = bytearray(_VOL_ARGS_SIZE)
    raw = _name(name)
    args[8:8 + len(raw)] = raw
    return args


def create_subvolume(dir_fd: int, name: str) -> None:
    """A new, empty subvolume ``name`` in the directory ``dir_fd``."""
    fcntl.ioctl(dir_fd, SUBVOL_CREATE, _vol_args(name))


def snapshot(source_fd: int, dir_fd: int, name: str, readonly: bool = False) -> None:
    """A snapshot of the subvolume open as ``source_fd``, as ``name`` in ``dir_fd``.

    The kernel commits the transaction before it returns: the snapshot is durable.
    """
    args = bytearray(_VOL_ARGS_SIZE)
    struct.pack_into("=qQQ", args, 0, source_fd, 0, SUBVOL_RDONLY if readonly else 0)
    raw = _name(name)
    args[_V2_NAME_OFFSET:_V2_NAME_OFFSET + len(raw)] = raw
    fcntl.ioctl(dir_fd, SNAP_CREATE_V2, args)


def destroy_subvolume(dir_fd: int, name: str) -> None:
    """Delete the subvolume ``name`` in ``dir_fd`` with everything in it; ENOTEMPTY
    when it holds another subvolume, EBUSY when it is a mount point."""
    fcntl.ioctl(dir_fd, SNAP_DESTROY, _vol_args(name))


def is_readonly(subvolume_fd: int) -> bool:
    flags = bytearray(8)
    fcntl.ioctl(subvolume_fd, SUBVOL_GETFLAGS, flags)
    return bool(struct.unpack("=Q", flags)[0] & SUBVOL_RDONLY)


def set_readonly(subvolume_fd: int, readonly: bool = True) -> None:
    """Set (or clear) the subvolume's read-only property."""
    flags = bytearray(8)
    fcntl.ioctl(subvolume_fd, SUBVOL_GETFLAGS, flags)
    value = struct.unpack("=Q", flags)[0]
    value = value | SUBVOL_RDONLY if readonly else value & ~SUBVOL_RDONLY
    fcntl.ioctl(subvolume_fd, SUBVOL_SETFLAGS, struct.pack("=Q", value))


def subvolume_id(fd: int) -> int:
    """The id of the subvolume holding ``fd`` (the unprivileged form of INO_LOOKUP:
    tree 0, the subvolume root's object id)."""
    args = bytearray(4096)
    struct.pack_into("=QQ", args, 0, 0, FIRST_FREE_OBJECTID)
    fcntl.ioctl(fd, INO_LOOKUP, args)
    return struct.unpack_from("=Q", args)[0]


def filesystem_uuid(fd: int) -> str:
    """The filesystem's uuid, as /sys/fs/btrfs/ names it."""
    args = bytearray(1024)
    fcntl.ioctl(fd, FS_INFO, args)
    return str(uuid.UUID(bytes=bytes(args[16:32])))
