"""The IDX file format of (Fashion-)MNIST, gzipped or plain.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the array's bytes in C order. Fashion-MNIST uses
unsigned bytes only: images ``(N, 28, 28)`` (magic ``0x00000803``) and labels
``(N,)`` (magic ``0x00000801``).
"""

from __future__ import annotations

import gzip
import os
import pathlib
import struct
import zlib

import numpy as np

from jaxlogit.errors import JaxlogitError

UBYTE_CODE = 0x08


def _open(path: pathlib.Path, mode: str):
    """Open ``path`` through gzip when its name ends in ``.gz``."""
    return gzip.open(path, mode) if path.suffix == ".gz" else open(path, mode)


def _read_bytes(path: pathlib.Path) -> bytes:
    """All (decompressed) bytes of ``path``; a corrupt gzip stream is a JaxlogitError."""
    try:
        with _open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise JaxlogitError(f"cannot read IDX file {path}: {e}; delete it and fetch it again") from e


def parse_idx(raw: bytes, *, ndim: int, source: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an unsigned-byte IDX file.

    Args:
      raw: the whole (decompressed) file.
      ndim: the number of dimensions the caller expects (3 for images, 1 for labels).
      source: the file name, used in error messages.

    Returns:
      A uint8 array of the shape stored in the header.

    Raises:
      JaxlogitError: wrong magic number, truncated header or a size that does not match.
    """
    expected_magic = (UBYTE_CODE << 8) | ndim
    magic = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if magic != expected_magic:
        found = "no magic number" if magic is None else f"magic number 0x{magic:08x}"
        raise JaxlogitError(
            f"bad IDX file {source}: {found}, expected 0x{expected_magic:08x}; is it the right file? "
            "fetch it again"
        )
    if len(raw) < 4 + 4 * ndim:
        raise JaxlogitError(
            f"bad IDX file {source}: only {len(raw)} bytes, too short for a header; fetch it again"
        )
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)):
        raise JaxlogitError(
            f"bad IDX file {source}: header says shape {shape} ({int(np.prod(shape))} bytes) "
            f"but {len(body)} bytes follow; the file is truncated or corrupt, fetch it again"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def read_idx(path: str | os.PathLike, *, ndim: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (``.gz`` or plain) into a uint8 array.

    Args:
      path: the file, e.g. ``train-images-idx3-ubyte.gz``.
      ndim: expected number of dimensions (3 for images ``(N, H, W)``, 1 for labels ``(N,)``).

    Returns:
      uint8 array of the stored shape.
    """
    path = pathlib.Path(path)
    return parse_idx(_read_bytes(path), ndim=ndim, source=str(path))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file, gzipped when ``path`` ends in ``.gz``.

    Args:
      path: destination file.
      array: uint8 array of any rank from 1 to 255.
    """
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays only, got {array.dtype}")
    header = struct.pack(">I", (UBYTE_CODE << 8) | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path = pathlib.Path(path)
    with _open(path, "wb") as f:
        f.write(header + array.tobytes())
