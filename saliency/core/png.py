"""A fast PNG writer for the maps, masks and cutouts ``saliency predict`` writes.

Pillow spends most of a map's time choosing a filter for every row and compressing with the
system zlib: 2.7 ms for a 400x300 8-bit map at compress level 1 (2-core AMD EPYC). Saliency maps
are smooth, so one filter for every row ("up": each byte minus the one above) does as well, and
ISA-L's deflate (the ``isal`` package) compresses it 4x faster than zlib: 0.3 ms, and a smaller
file (21 KB against Pillow's 26 KB). Without ``isal`` the standard zlib is used. The files are
ordinary 8-bit PNGs (gray, RGB or RGBA) that any reader opens.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

try:  # ISA-L's deflate: the same format, several times faster at its fast levels
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - isal is a dependency; zlib is the fallback
    _deflate = zlib

DEFLATE_LEVEL = 1

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: gray, RGB, RGBA
FILTER_UP = 2


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 ``(H, W)``, ``(H, W, 3)`` or ``(H, W, 4)`` -> the bytes of an 8-bit PNG."""
    if pixels.dtype != np.uint8:
        raise ValueError(f"encode_png takes uint8 pixels, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in COLOR_TYPES or 0 in pixels.shape:
        raise ValueError(f"encode_png takes (H, W), (H, W, 3) or (H, W, 4) pixels, got {pixels.shape}")
    height, width, channels = pixels.shape
    rows = pixels.reshape(height, width * channels)
    filtered = np.empty((height, width * channels + 1), dtype=np.uint8)
    filtered[:, 0] = FILTER_UP
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as PNG's filter is
    header = struct.pack(">IIBBBBB", width, height, 8, COLOR_TYPES[channels], 0, 0, 0)
    return b"".join((SIGNATURE, _chunk(b"IHDR", header),
                     _chunk(b"IDAT", _deflate.compress(filtered.data, DEFLATE_LEVEL)), _chunk(b"IEND", b"")))
