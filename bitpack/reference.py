# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the bitpack oracle. Independent of kernels.py and of the fixture packer in inputs.py;
only the judge process uses it.

The layout, as Lance writes it (bitpack/program.md has the upstream pointers): a page is a run
of chunks, one per 1024 values; a chunk is one header word of the value type T holding its bit
width W (0..T), then 1024 * W / T words of T in the FastLanes layout: value index
FL_ORDER[row // 8] * 16 + (row % 8) * 128 + lane is row `row` of lane `lane`; each lane packs
its T rows W bits at a time, low bits first, spilling into the next word; the lane's j-th word
sits at j * LANES + lane. The last chunk is zero-padded to 1024 values and packed in full.

`unpack_literal` and `pack_literal` follow that text with Python ints, one value at a time:
slow, and meant to be obviously right. `unpack` does the same per row with numpy, for pages
too large for the literal loops; the tests hold it to `unpack_literal`. Bitwise equality only.
"""
import numpy as np

CHUNK_VALUES = 1024  # values per chunk (Lance's ELEMS_PER_CHUNK)
FL_ORDER = (0, 4, 2, 6, 1, 5, 3, 7)  # FastLanes row-group order
DTYPES = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}  # T -> word type


def lanes(bits):
    return CHUNK_VALUES // bits


def fl_index(row, lane):
    """Position in the chunk of the value at (row, lane): the same formula for every T."""
    return FL_ORDER[row // 8] * 16 + (row % 8) * 128 + lane


def body_words(bits, width):
    return CHUNK_VALUES * width // bits


def num_chunks(num_values):
    return -(-num_values // CHUNK_VALUES)


def bit_width(values):
    """Lance's per-chunk width: T - leading_zeros(OR of the chunk), 0 for an all-zero chunk."""
    acc = 0
    for v in values:
        acc |= int(v)
    return acc.bit_length()


# ---------------------------------------------------------------- literal, one value at a time
def unpack_chunk_literal(body, bits, width):
    """1024 Python ints from one chunk body (a sequence of ints)."""
    out = [0] * CHUNK_VALUES
    mask = (1 << width) - 1
    for lane in range(lanes(bits)):
        for row in range(bits):
            start = row * width  # bit offset of this row inside the lane's bit stream
            word, shift = divmod(start, bits)
            value = 0
            if width:
                value = int(body[word * lanes(bits) + lane]) >> shift
                if shift + width > bits:  # the value spills into the lane's next word
                    value |= int(body[(word + 1) * lanes(bits) + lane]) << (bits - shift)
            out[fl_index(row, lane)] = value & mask
    return out


def unpack_literal(page, num_values, bits):
    """The values of a page, as a numpy array of T (the oracle for small pages)."""
    words = [int(w) for w in page]
    values, pos = [], 0
    for _ in range(num_chunks(num_values)):
        width = words[pos]
        if width > bits:
            raise ValueError(f"chunk at word {pos} has width {width} > {bits}")
        size = body_words(bits, width)
        values += unpack_chunk_literal(words[pos + 1:pos + 1 + size], bits, width)
        pos += 1 + size
    if pos != len(words):
        raise ValueError(f"page has {len(words)} words, its chunks use {pos}")
    return np.array(values[:num_values], dtype=DTYPES[bits])


def pack_chunk_literal(values, bits, width):
    """One chunk body (a list of ints) from 1024 ints that fit in `width` bits."""
    body = [0] * body_words(bits, width)
    for lane in range(lanes(bits)):
        for row in range(bits):
            value = int(values[fl_index(row, lane)])
            word, shift = divmod(row * width, bits)
            if width:
                body[word * lanes(bits) + lane] |= (value << shift) & ((1 << bits) - 1)
                if shift + width > bits:
                    body[(word + 1) * lanes(bits) + lane] |= value >> (bits - shift)
    return body


def pack_literal(values, bits, widths=None):
    """A page from values (ints < 2^T); widths per chunk default to Lance's bit_width."""
    values = [int(v) for v in values]
    words = []
    for c in range(num_chunks(len(values))):
        chunk = values[c * CHUNK_VALUES:(c + 1) * CHUNK_VALUES]
        chunk += [0] * (CHUNK_VALUES - len(chunk))  # Lance pads the last chunk with zeros
        width = bit_width(chunk) if widths is None else int(widths[c])
        if bit_width(chunk) > width:
            raise ValueError(f"chunk {c} needs {bit_width(chunk)} bits, given {width}")
        words += [width] + pack_chunk_literal(chunk, bits, width)
    return np.array(words, dtype=DTYPES[bits])


# ---------------------------------------------------------------- the same, a row at a time
def index_table(bits):
    """[T, LANES] value positions of each (row, lane)."""
    rows = np.arange(bits)[:, None]
    order = np.array(FL_ORDER)[rows // 8]
    return order * 16 + (rows % 8) * 128 + np.arange(lanes(bits))[None, :]


def chunk_starts(page, num_values, bits):
    """Word offset of each chunk's header and the chunk widths, walking the headers."""
    starts, widths, pos = [], [], 0
    for _ in range(num_chunks(num_values)):
        if pos >= len(page):
            raise ValueError(f"page ends at word {pos} before chunk {len(starts)}")
        width = int(page[pos])
        if width > bits:
            raise ValueError(f"chunk at word {pos} has width {width} > {bits}")
        starts.append(pos)
        widths.append(width)
        pos += 1 + body_words(bits, width)
    if pos != len(page):
        raise ValueError(f"page has {len(page)} words, its chunks use {pos}")
    return np.array(starts, dtype=np.int64), np.array(widths, dtype=np.int64)


def unpack(page, num_values, bits):
    """unpack_literal, vectorised over the chunks of each width: row by row, in uint64."""
    starts, widths = chunk_starts(page, num_values, bits)
    n_lanes = lanes(bits)
    out = np.zeros((len(starts), CHUNK_VALUES), dtype=np.uint64)
    where = index_table(bits)
    for width in np.unique(widths):
        width = int(width)
        picked = np.flatnonzero(widths == width)
        if width == 0:
            continue  # zero-width chunks decode to zeros
        offsets = starts[picked][:, None] + 1 + np.arange(width * n_lanes)[None, :]
        body = page[offsets].astype(np.uint64).reshape(len(picked), width, n_lanes)
        mask = np.uint64((1 << width) - 1)
        rows = np.empty((len(picked), bits, n_lanes), dtype=np.uint64)
        for row in range(bits):
            word, shift = divmod(row * width, bits)
            value = body[:, word, :] >> np.uint64(shift)
            if shift + width > bits:
                value |= body[:, word + 1, :] << np.uint64(bits - shift)
            rows[:, row, :] = value & mask
        block = np.empty((len(picked), CHUNK_VALUES), dtype=np.uint64)
        block[:, where] = rows
        out[picked] = block
    return out.reshape(-1)[:num_values].astype(DTYPES[bits])


# ---------------------------------------------------------------- the judge's check
def check(outputs, expected, bits):
    """None if the kernel's outputs equal `expected` bitwise, else the reason."""
    if len(outputs) != 1:
        return f"decode returned {len(outputs)} arrays, expected 1 (values,)"
    (got,) = outputs
    dtype = np.dtype(DTYPES[bits])
    if type(got) is not np.ndarray or got.dtype != dtype or got.shape != expected.shape:
        return (f"output is {type(got).__name__} {getattr(got, 'dtype', '?')} "
                f"{getattr(got, 'shape', '?')}, expected {dtype} {expected.shape}")
    if not np.array_equal(got, expected):
        j = int(np.argmax(got != expected))
        chunk, pos = divmod(j, CHUNK_VALUES)
        return (f"value {j} (chunk {chunk}, position {pos}): expected {expected[j]}, kernel "
                f"says {got[j]}")
    return None
