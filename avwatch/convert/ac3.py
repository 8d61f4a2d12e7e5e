"""The dialogue normalisation value (dialnorm) of an AC-3 or E-AC-3 frame, read from its header.

dialnorm is the programme's dialogue level as the encoder was told it (-1 to -31 dB; 0 in the bitstream
means -31): a decoder in a home receiver turns the programme down to bring dialogue to -31 dBFS, so a
dialnorm that does not match the measured loudness makes the channel too loud or too quiet against the
others. FFmpeg decodes the PCM without applying it and does not export it, so the converter reads it
from the frame header of the packets it already demuxes (ATSC A/52, sections 5.3 and E.1.2).
"""
from __future__ import annotations


class _Bits:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            value = (value << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value


def dialnorm_db(frame: bytes) -> int | None:
    """The dialnorm (dB, -31..-1) of the first programme in an AC-3/E-AC-3 frame; None if it is not one."""
    if len(frame) < 8 or frame[0] != 0x0B or frame[1] != 0x77:
        return None
    bsid = frame[5] >> 3
    try:
        if bsid <= 10:                       # AC-3: syncinfo (crc1, fscod, frmsizecod), then bsi
            b = _Bits(frame[5:])
            b.read(5)                        # bsid
            b.read(3)                        # bsmod
            acmod = b.read(3)
            if acmod & 1 and acmod != 1:
                b.read(2)                    # cmixlev
            if acmod & 4:
                b.read(2)                    # surmixlev
            if acmod == 2:
                b.read(2)                    # dsurmod
            b.read(1)                        # lfeon
            value = b.read(5)
        elif bsid <= 16:                     # E-AC-3: strmtyp, substreamid, frmsiz, fscod, ..., bsid, dialnorm
            b = _Bits(frame[2:])
            b.read(2 + 3 + 11)
            b.read(2)                        # fscod
            b.read(2)                        # numblkscod (or fscod2 when fscod is 3: the same width)
            b.read(3 + 1)                    # acmod, lfeon
            b.read(5)                        # bsid
            value = b.read(5)
        else:
            return None
    except IndexError:
        return None
    return -31 if value == 0 else -value
