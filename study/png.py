"""Minimal PNG encoder and decoder (numpy + zlib), so plots need no imaging library.

Design choices:
- Writes 8-bit truecolour (colour type 2), no interlace, filter type 0 on every row:
  signature, IHDR, one IDAT (zlib level 9) and IEND, each chunk with its CRC-32. Plots
  are mostly flat colour, so they compress to a few tens of kilobytes.
- `decode_png` reads back exactly what `encode_png` writes (and checks every CRC); it
  lets tests check images without an imaging library.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(tag + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)


def encode_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    h, w, _ = rgb.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), rgb.reshape(h, w * 3)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(rows.tobytes(), 9)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, payload) of every chunk; ValueError on a bad signature or CRC."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG: bad signature")
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(tag + payload) & 0xFFFFFFFF != crc:
            raise ValueError(f"PNG chunk {tag!r}: CRC mismatch")
        out.append((tag, payload))
        pos += 12 + length
    return out


def decode_png(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 pixels of a PNG written by `encode_png`."""
    parts = chunks(data)
    tags = [tag for tag, _ in parts]
    if tags[0] != b"IHDR" or tags[-1] != b"IEND":
        raise ValueError(f"PNG chunks out of order: {tags}")
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", parts[0][1])
    if (depth, colour, interlace) != (8, 2, 0):
        raise ValueError("only 8-bit RGB, non-interlaced PNGs are supported")
    raw = zlib.decompress(b"".join(p for t, p in parts if t == b"IDAT"))
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + w * 3)
    if rows[:, 0].any():
        raise ValueError("only filter type 0 is supported")
    return rows[:, 1:].reshape(h, w, 3).copy()
