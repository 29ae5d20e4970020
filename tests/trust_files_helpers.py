"""Helpers of the tests/test_trust_files_*.py files: files written byte by byte the way their
real producers write them (a Python-2 CIFAR batch, a deflate zip bomb), and a subprocess
runner with an address-space limit."""

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- Python-2 pickles
def _py2_str(data: bytes) -> bytes:
    """A Python-2 ``str`` as cPickle writes it: SHORT_BINSTRING or BINSTRING."""
    if len(data) < 256:
        return b"U" + bytes([len(data)]) + data
    return b"T" + struct.pack("<i", len(data)) + data


def _py2_int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


class Py2Pickler:
    """A protocol-2 pickle as Python 2's cPickle writes the official CIFAR batches: byte
    strings as ``str`` (BINSTRING), lists APPENDS'd in batches of 1000, a NumPy array as
    ``numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), 'b')`` then BUILD with
    ``(1, shape, dtype('u1', 0, 1), False, raw bytes)``, memo puts after each object."""

    def __init__(self):
        self.out, self.memo = [b"\x80\x02"], 0

    def put(self):
        self.memo += 1
        self.out.append(b"q" + bytes([self.memo]) if self.memo < 256 else b"r" + struct.pack("<I", self.memo))

    def save(self, obj):
        w = self.out.append
        if isinstance(obj, bytes):
            w(_py2_str(obj))
            self.put()
        elif isinstance(obj, bool):
            w(b"\x88" if obj else b"\x89")
        elif isinstance(obj, int):
            w(_py2_int(obj))
        elif isinstance(obj, list):
            w(b"]")
            self.put()
            for start in range(0, len(obj), 1000):
                w(b"(")
                for item in obj[start : start + 1000]:
                    self.save(item)
                w(b"e")
        elif isinstance(obj, dict):
            w(b"}")
            self.put()
            w(b"(")
            for key, value in obj.items():
                self.save(key)
                self.save(value)
            w(b"u")
        elif isinstance(obj, np.ndarray):
            assert obj.dtype == np.uint8 and obj.flags.c_contiguous
            w(b"cnumpy.core.multiarray\n_reconstruct\n")
            self.put()
            w(b"cnumpy\nndarray\n")
            self.put()
            w(b"K\x00\x85")  # (0,)
            self.put()
            w(_py2_str(b"b") + b"\x87R")  # (ndarray, (0,), 'b') -> REDUCE
            self.put()
            w(b"(K\x01")
            w(b"(" + b"".join(_py2_int(d) for d in obj.shape) + b"t")
            self.put()
            w(b"cnumpy\ndtype\n")
            self.put()
            w(_py2_str(b"u1") + b"K\x00K\x01\x87R")  # dtype('u1', 0, 1)
            self.put()
            w(b"(K\x03" + _py2_str(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")  # its state
            w(b"\x89" + _py2_str(obj.tobytes()) + b"tb")  # not Fortran, the raw bytes -> BUILD
        else:
            raise TypeError(type(obj))

    def dumps(self, obj) -> bytes:
        self.save(obj)
        return b"".join(self.out) + b"."


def py2_cifar_batch(labels, data: np.ndarray, batch_label: bytes = b"training batch 1 of 5") -> bytes:
    names = [b"file_%05d.png" % i for i in range(len(labels))]
    return Py2Pickler().dumps(
        {b"batch_label": batch_label, b"labels": list(labels), b"data": data, b"filenames": names}
    )


# ----------------------------------------------------------------------------- zip bombs
def write_deflate_bomb(path, members) -> int:
    """A zip whose ``members`` ``{name: (header bytes, zero bytes after it)}`` are deflated
    the way a zip bomb is: each 1 MB of zeros compresses to ~1 KB.  Written by hand (local
    headers, central directory, zip64 where needed) so that gigabytes are described without
    ever being in memory.  Returns the file's size."""
    mib = 1 << 20
    zero_block = zlib.compressobj(9, zlib.DEFLATED, -15)
    # A full flush ends each block on a byte boundary and resets the window, so every 1 MB of
    # zeros after the first compresses to the same bytes: the stream is built by repetition.
    first = zero_block.compress(bytes(mib)) + zero_block.flush(zlib.Z_FULL_FLUSH)
    repeat = zero_block.compress(bytes(mib)) + zero_block.flush(zlib.Z_FULL_FLUSH)
    zeros_1mib = bytes(mib)
    records, offset, blob = [], 0, []
    for name, (header, zeros) in members.items():
        assert zeros % mib == 0
        head = zlib.compressobj(9, zlib.DEFLATED, -15)
        stream = head.compress(header) + head.flush(zlib.Z_FULL_FLUSH)
        body = [stream]
        if zeros:
            body.append(first)
            body.extend([repeat] * (zeros // mib - 1))
        body.append(zlib.compressobj(9, zlib.DEFLATED, -15).flush())  # an empty final block
        data = b"".join(body)
        crc = zlib.crc32(header)
        for _ in range(zeros // mib):  # ~0.3 s per GB: the bomb is honest, its CRC matches
            crc = zlib.crc32(zeros_1mib, crc)
        size = len(header) + zeros
        encoded = name.encode()
        extra = struct.pack("<HHQQ", 1, 16, size, len(data))
        local = struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0, crc, 0xFFFFFFFF, 0xFFFFFFFF, len(encoded), len(extra)
        )
        blob.append(local + encoded + extra + data)
        records.append((encoded, crc, size, len(data), offset))
        offset += len(local) + len(encoded) + len(extra) + len(data)
    central = []
    for encoded, crc, size, csize, where in records:
        extra = struct.pack("<HHQQQ", 1, 24, size, csize, where)
        central.append(
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                45,
                45,
                0,
                8,
                0,
                0,
                crc,
                0xFFFFFFFF,
                0xFFFFFFFF,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                0,
                0xFFFFFFFF,
            )
            + encoded
            + extra
        )
    cd = b"".join(central)
    zip64_end = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(records), len(records), len(cd), offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, offset + len(cd), 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        for part in blob:
            f.write(part)
        f.write(cd + zip64_end + locator + end)
    return os.path.getsize(path)


def npy_header(shape, dtype="<f4") -> bytes:
    """The header numpy.save writes for an array of ``shape`` (format 1.0, padded to 64)."""
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (dtype, repr(tuple(shape)))
    pad = 64 - (10 + len(text) + 1) % 64
    text = text + " " * pad + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


# ----------------------------------------------------------------------------- subprocesses
def run_limited(code: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``code`` (Python, dedented) from the repository root in a subprocess; the code
    calls ``limit_address_space(extra_gib)`` after its imports to cap the process's address
    space (RLIMIT_AS) at its current size plus ``extra_gib``: an allocation of more raises
    MemoryError there instead of filling the machine (torch alone maps ~3 GB of address
    space, so the cap is set after importing it)."""
    prelude = (
        "import resource, sys\n"
        f"sys.path[:0] = [{REPO!r}, {os.path.join(REPO, 'tests')!r}]\n"
        "def limit_address_space(extra_gib):\n"
        "    size_kb = int(open('/proc/self/status').read().split('VmSize:')[1].split()[0])\n"
        "    limit = size_kb * 1024 + int(extra_gib * (1 << 30))\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    )


def last_json_line(text: str):
    return json.loads(text.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- images
def write_png_bomb(path, side: int, decodable: bool = True) -> int:
    """A real greyscale PNG of ``side`` x ``side`` black pixels: a few hundred KB that decode
    to side^2 bytes (x3 as RGB).  ``decodable=False`` writes the header only (with an empty
    image stream): enough for anything that checks the size before decoding.  Returns the
    file size."""
    compressor = zlib.compressobj(9)
    if not decodable:
        side_rows = 0
    else:
        side_rows = side
    row = bytes(side + 1)  # filter byte 0, then the row's pixels
    rows_per_chunk = max(1, (8 << 20) // len(row))
    parts, done = [], 0
    while done < side_rows:
        n = min(rows_per_chunk, side_rows - done)
        parts.append(compressor.compress(row * n))
        done += n
    parts.append(compressor.flush())
    idat = b"".join(parts)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return os.path.getsize(path)
