"""The idx file format (MNIST, Fashion-MNIST), read and written with numpy; gzip or plain.

Layout: 2 zero bytes, a dtype code, the number of dims ``d``; ``d`` big-endian uint32 sizes;
then the values, row-major. Images (``idx3``) therefore start at byte 16, labels (``idx1``)
at byte 8. A wrong magic or a length that does not match the header is a ``ValueError``
naming the file.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""idx dtype code -> numpy dtype (multi-byte values are big-endian)."""

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The (decompressed, if gzip by content) bytes of ``path``."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated or damaged gzip stream
        raise ValueError(f"{path}: corrupt gzip data ({e})") from e


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """The array stored in idx file ``path`` (checked: magic, ``ndim`` if given, length)."""
    path = Path(path)
    raw = read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in DTYPES:
        magic = raw[:4].hex() or "missing"
        raise ValueError(f"{path}: not an idx file (magic {magic}, expected 0000 + dtype code + ndim)")
    dims_n = raw[3]
    if ndim is not None and dims_n != ndim:
        raise ValueError(f"{path}: idx file has {dims_n} dimensions, expected {ndim}")
    header = 4 + 4 * dims_n
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes, expected at least {header})")
    shape = struct.unpack(f">{dims_n}I", raw[4:header])
    dtype = np.dtype(DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "trailing bytes"
        raise ValueError(f"{path}: {len(raw)} bytes, expected {expected} for shape {shape} ({what})")
    # copy: frombuffer over bytes is read-only, and torch.from_numpy wants a writable array
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as idx to ``path`` (gzip if ``compress``, default: name ends ``.gz``).
    Gzip output is byte-for-byte reproducible (mtime 0)."""
    path = Path(path)
    array = np.ascontiguousarray(array)
    codes = {np.dtype(v).newbyteorder(">").str[1:]: k for k, v in DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder(">").str[1:])
    if code is None:
        raise ValueError(f"{path}: dtype {array.dtype} has no idx code")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.dtype(DTYPES[code])).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
