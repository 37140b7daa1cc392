# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: the wire between the judge and a contestant: a pipe for requests, shared memory for
call arguments and replies.

Map:
  send_frame, read_exact, recv_frame     length-prefixed frames on the request and reply pipes
  output_slot, fill_slots, columns_of    call arguments: output buffers in the reply memory,
                                         a batch's calls as columns (one buffer per argument)
  encode_reply, encode_error             the contestant writes its outputs into reply memory
  decode_reply                           the judge rebuilds them from untrusted bytes
Everything the contestant does here is inside its timed request, so it is kept lean.
"""
import math
import os
import select
import struct
import time

import numpy as np

MAX_MESSAGE_BYTES = 256 << 20  # request or reply memory: a larger message is a violation
REPLY_HEADER_BYTES = 1 << 20  # a reply's header lives before its arrays
OUTPUT_SLOT = "__output_slot__"  # marks a call argument the contestant fills (output_slot)


# ---------------------------------------------------------------- the pipe
def write_all(fd, data, deadline=math.inf):
    view = memoryview(data)
    while view:
        if deadline != math.inf:  # the judge never blocks on a contestant that stopped reading
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
                raise TimeoutError
        view = view[os.write(fd, view):]


def read_exact(fd, size, deadline):
    chunks, got = [], 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise TimeoutError
        chunk = os.read(fd, min(size - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def send_frame(fd, payload, deadline):
    write_all(fd, struct.pack("<Q", len(payload)) + payload, deadline)


def recv_frame(fd):
    """Contestant side: the next frame, in as few system calls as it takes (one, mostly):
    every one of them is inside the kernel's timed request."""
    data = os.read(fd, 1 << 16)
    if len(data) < 8:
        data += _read_blocking(fd, 8 - len(data))
    (size,) = struct.unpack_from("<Q", data)
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a message of {size} bytes exceeds {MAX_MESSAGE_BYTES}")
    if len(data) < 8 + size:
        data += _read_blocking(fd, 8 + size - len(data))
    return memoryview(data)[8:]


def _read_blocking(fd, size):
    chunks = []
    while size > 0:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- the reply format
# A reply lies in the shared reply memory: at offset 0 the count of the int64 header words
# that follow it, then the words, then (from REPLY_HEADER_BYTES, 64-byte aligned) the arrays.
#   REPLY_OK, outputs, then per output: its array count, per array (dtype code, ndim, offset,
#     *shape)
#   REPLY_STACKED, outputs, arrays per output, per array position (dtype code, ndim, offset,
#     *shape): where every output has the same dtypes and shapes, one region per position
#     holds that array of every output, back to back (one copy, not one per call)
#   REPLY_ERROR, the byte length of a UTF-8 message that follows the words
REPLY_ERROR, REPLY_OK, REPLY_STACKED = 0, 1, 2
DTYPES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8")
DTYPE_CODES = {np.dtype(d): code for code, d in enumerate(DTYPES)}  # all a reply may carry
MAX_NDIM = 8  # dimensions of an output array
MAX_ERROR_BYTES = 1 << 16  # an error message is cut to this


def output_slot(dtype, length):
    """A call argument the contestant replaces with a writable array in the reply memory: a
    kernel that fills it and returns it (or a prefix of it) sends its output without a copy."""
    return (OUTPUT_SLOT, np.dtype(dtype).str, int(length))


def fill_slots(call_args, replies, cursor):
    """Contestant side: output slots become views into the reply memory, past the header."""
    filled = []
    for arg in call_args:
        if type(arg) is tuple and arg[:1] == (OUTPUT_SLOT,):
            dtype = np.dtype(arg[1])
            filled.append(np.frombuffer(replies, dtype, arg[2], cursor[0]))
            cursor[0] += -(-arg[2] * dtype.itemsize // 64) * 64
        else:
            filled.append(arg)
    return tuple(filled)


def _write_header(replies, words):
    if 8 * (len(words) + 1) > REPLY_HEADER_BYTES:
        raise ValueError(f"a reply header of {len(words)} words exceeds {REPLY_HEADER_BYTES} bytes")
    struct.pack_into(f"<Q{len(words)}q", replies, 0, len(words), *words)


def _array_code(arr):
    if type(arr) is not np.ndarray:
        raise TypeError(f"an output element is {type(arr).__module__}.{type(arr).__name__}, "
                        "not exactly numpy.ndarray")
    code = DTYPE_CODES.get(arr.dtype)
    if code is None or arr.ndim > MAX_NDIM:
        raise TypeError(f"an output has dtype {arr.dtype} and {arr.ndim} dimensions: only "
                        f"plain numeric arrays of up to {MAX_NDIM} travel")
    return code


def _columns_if_uniform(results):
    """The outputs as columns (one per array position) when every output is a tuple of plain
    arrays with the first output's dtypes and shapes, else None: such a batch travels
    stacked."""
    if not all(type(r) is tuple for r in results):
        return None
    try:
        columns = list(zip(*results, strict=True))
        if not columns or any(len({(type(a), a.dtype, a.shape) for a in c}) != 1
                              or type(c[0]) is not np.ndarray for c in columns):
            return None
    except (ValueError, AttributeError):  # outputs of unequal length, or not arrays
        return None
    return columns


def encode_reply(results, replies, start=REPLY_HEADER_BYTES, base=None):
    """Contestant side: output tuples into `replies`; returns the reply's size. Arrays are
    copied once from `start` on; when output slots were filled (`base` is then the address of
    the reply memory), an array that already lies in the reply memory stays where it is.
    Plain ndarrays of plain numeric dtypes only."""
    columns = _columns_if_uniform(results) if base is None and len(results) > 1 else None
    if columns:
        words, pos = [REPLY_STACKED, len(results), len(columns)], start
        for column in columns:
            code, shape = _array_code(column[0]), column[0].shape
            nbytes = column[0].nbytes * len(column)
            if pos + nbytes > len(replies):
                raise ValueError(f"outputs exceed the {len(replies)} byte reply memory")
            np.concatenate(column, axis=None, out=np.frombuffer(
                replies, column[0].dtype, column[0].size * len(column), pos))
            words += (code, len(shape), pos, *shape)
            pos += -(-nbytes // 64) * 64
        _write_header(replies, words)
        return max(pos, 8 * (len(words) + 1))
    words, pos, end = [REPLY_OK, len(results)], start, 0
    for result in results:
        if type(result) is not tuple:
            raise TypeError(f"an output is {type(result).__name__}, expected a tuple of arrays")
        words.append(len(result))
        for arr in result:
            code = _array_code(arr)
            where = None
            if base is not None and arr.flags.c_contiguous:
                where = arr.ctypes.data - base  # in the reply memory (a filled slot): no copy
            if where is None or not REPLY_HEADER_BYTES <= where <= len(replies) - arr.nbytes:
                where = pos
                if pos + arr.nbytes > len(replies):
                    raise ValueError(f"outputs exceed the {len(replies)} byte reply memory")
                flat = arr if arr.flags.c_contiguous else arr.copy()
                replies[pos:pos + arr.nbytes] = flat.data.cast("B")
                pos += -(-arr.nbytes // 64) * 64
            end = max(end, where + arr.nbytes)
            words += (code, arr.ndim, where, *arr.shape)
    _write_header(replies, words)
    return max(end, 8 * (len(words) + 1))


def encode_error(message, replies):
    raw = message.encode("utf-8", "replace")[:MAX_ERROR_BYTES]
    _write_header(replies, (REPLY_ERROR, len(raw)))
    replies[24:24 + len(raw)] = raw
    return 24 + len(raw)


def _decode_array(reply, words, at, count):
    """The array described at words[at:], `count` of them back to back, as one fresh array
    (leading axis: count); and the index past its description."""
    code, ndim, offset = words[at:at + 3]
    if not (0 <= code < len(DTYPES) and 0 <= ndim <= MAX_NDIM):
        raise ValueError(f"dtype code {code}, {ndim} dimensions")
    shape = words[at + 3:at + 3 + ndim]
    if len(shape) != ndim or any(d < 0 for d in shape):
        raise ValueError(f"shape {shape}")
    dtype = np.dtype(DTYPES[code])
    items = math.prod(shape) * count
    if not REPLY_HEADER_BYTES <= offset <= len(reply) - items * dtype.itemsize:
        raise ValueError("an array outside the reply")
    return np.frombuffer(reply, dtype, items, offset).reshape(count, *shape).copy(), at + 3 + ndim


def decode_reply(reply):
    """Judge side: (outputs as fresh arrays, None) or (None, the kernel's error), rebuilt from
    untrusted bytes: every count, dtype code, shape and offset is checked against the reply.
    Raises ValueError for a malformed reply."""
    (count,) = struct.unpack_from("<Q", reply, 0)
    if not 2 <= count <= REPLY_HEADER_BYTES // 8 - 1 or 8 * (count + 1) > len(reply):
        raise ValueError(f"a reply header of {count} words")
    words = struct.unpack_from(f"<{count}q", reply, 8)
    status, outputs = words[:2]
    if status == REPLY_ERROR:
        if not 0 <= outputs <= len(reply) - 24:
            raise ValueError("an error message outside the reply")
        return None, bytes(reply[24:24 + outputs]).decode("utf-8", "replace")
    outs, at = [], 2
    try:
        if status == REPLY_STACKED:
            columns, at = [], 3
            for _ in range(words[2]):
                column, at = _decode_array(reply, words, at, outputs)
                columns.append(column)
            outs = [tuple(column[j] for column in columns) for j in range(outputs)]
        elif status == REPLY_OK:
            for _ in range(outputs):
                out, at = [], at + 1
                for _ in range(words[at - 1]):
                    arr, at = _decode_array(reply, words, at, 1)
                    out.append(arr[0])
                outs.append(tuple(out))
        else:
            raise ValueError(f"reply status {status}")
    except (TypeError, IndexError):
        raise ValueError("a truncated reply header") from None
    if at != count:
        raise ValueError(f"{count - at} header words left over")
    return outs, None


def columns_of(calls):
    """A batch's calls as columns, one per argument: a stacked array where every call has an
    array of one dtype and shape (the contestant then gets row views: one buffer, not one per
    call), else a list."""
    columns = []
    for values in zip(*calls, strict=True):
        first = values[0]
        if type(first) is np.ndarray and all(
                type(v) is np.ndarray and v.dtype == first.dtype and v.shape == first.shape
                for v in values):
            columns.append(np.stack(values))
        else:
            columns.append(list(values))
    return columns
