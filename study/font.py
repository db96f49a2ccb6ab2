"""A 5x7 bitmap font (ASCII letters, digits, common punctuation) for plot labels.

Each glyph is 7 rows of 5 bits, written as 14 hex digits (row 0 first, bit 4 = the
leftmost pixel). Characters without a glyph render as "?". `render` returns a boolean
mask, scaled by an integer factor; characters advance 6 pixels (5 + 1 of spacing).
"""

from __future__ import annotations

import numpy as np

WIDTH, HEIGHT, ADVANCE = 5, 7, 6

# fmt: off
_GLYPHS = {
    "0": "0e11131519110e", "1": "040c040404040e", "2": "0e11010204081f", "3": "1f02040201110e",
    "4": "02060a121f0202", "5": "1f101e0101110e", "6": "0608101e11110e", "7": "1f010204080808",
    "8": "0e11110e11110e", "9": "0e11110f01020c",
    "A": "0e11111f111111", "B": "1e11111e11111e", "C": "0e11101010110e", "D": "1c12111111121c",
    "E": "1f10101e10101f", "F": "1f10101e101010", "G": "0e11101711110f", "H": "1111111f111111",
    "I": "0e04040404040e", "J": "0702020202120c", "K": "11121418141211", "L": "1010101010101f",
    "M": "111b1515111111", "N": "11111915131111", "O": "0e11111111110e", "P": "1e11111e101010",
    "Q": "0e11111115120d", "R": "1e11111e141211", "S": "0f10100e01011e", "T": "1f040404040404",
    "U": "1111111111110e", "V": "11111111110a04", "W": "1111111515150a", "X": "11110a040a1111",
    "Y": "1111110a040404", "Z": "1f01020408101f",
    "a": "00000e010f110f", "b": "1010161911111e", "c": "00000e1010110e", "d": "01010d1311110f",
    "e": "00000e111f100e", "f": "0609081c080808", "g": "000f11110f010e", "h": "10101619111111",
    "i": "04000c0404040e", "j": "0200060202120c", "k": "10101214181412", "l": "0c04040404040e",
    "m": "00001a15151111", "n": "00001619111111", "o": "00000e1111110e", "p": "00001e111e1010",
    "q": "00000d130f0101", "r": "00001619101010", "s": "00000e100e011e", "t": "08081c08080906",
    "u": "0000111111130d", "v": "00001111110a04", "w": "0000111115150a", "x": "0000110a040a11",
    "y": "000011110f010e", "z": "00001f0204081f",
    " ": "00000000000000", ".": "00000000000c0c", ",": "000000000c0408", "-": "0000001f000000",
    "+": "0004041f040400", "/": "00010204081000", "_": "0000000000001f", ":": "000c0c000c0c00",
    "(": "02040808080402", ")": "08040202020408", "%": "18190204081303", "=": "00001f001f0000",
    "|": "04040404040404", "[": "0e08080808080e", "]": "0e02020202020e", "?": "0e110102040004",
    "<": "02040810080402", ">": "08040201020408", "*": "0004150e150400", "^": "040a1100000000",
    "#": "0a0a1f0a1f0a0a", "!": "04040404040004", "'": "04040800000000", "&": "0c12140815120d",
    "@": "0e11171517100e", "~": "00000d16000000", ";": "000c0c000c0408", '"': "0a0a0000000000",
}
# fmt: on


def _bitmap(code: str) -> np.ndarray:
    rows = [int(code[i : i + 2], 16) for i in range(0, 14, 2)]
    return np.array([[(r >> (4 - c)) & 1 for c in range(WIDTH)] for r in rows], dtype=bool)


GLYPHS = {ch: _bitmap(code) for ch, code in _GLYPHS.items()}


def text_width(text: str, scale: int = 1) -> int:
    return max(len(text) * ADVANCE - 1, 0) * scale


def render(text: str, scale: int = 1) -> np.ndarray:
    """(7 * scale, text_width) boolean mask of `text`."""
    mask = np.zeros((HEIGHT, max(len(text) * ADVANCE - 1, 0)), dtype=bool)
    for i, ch in enumerate(text):
        mask[:, i * ADVANCE : i * ADVANCE + WIDTH] = GLYPHS.get(ch, GLYPHS["?"])
    return mask.repeat(scale, axis=0).repeat(scale, axis=1)
