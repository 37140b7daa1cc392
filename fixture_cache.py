# SPDX-License-Identifier: MIT OR Apache-2.0
"""FIXED: fixture caches on disk, for targets whose fixtures take seconds to build (pq_l2,
fts_bm25). A cache is .cache/<target>/<name>-<key>.npz beside its sha256; `key` names the code
and seeds it was built from. Every load checks the hash: a missing, stale or corrupted cache
is rebuilt, and a trial re-checks it afterwards (`intact`) so a kernel cannot plant answers.
"""
import io
import os

import numpy as np

from ledger import REPO, progress, sha256_hex

CACHE_DIR = REPO / ".cache"  # one folder per target; git-ignored


def paths(target, name, key):
    directory = CACHE_DIR / target
    return directory / f"{name}-{key}.npz", directory / f"{name}-{key}.sha256"


def intact(target, name, key, digest):
    """True if the cache still hashes to `digest`; if not, it is deleted."""
    data_path, sum_path = paths(target, name, key)
    try:
        if sha256_hex(data_path.read_bytes()) == digest:
            return True
    except OSError:
        pass
    for path in (data_path, sum_path):
        path.unlink(missing_ok=True)
    return False


def cached(target, name, key, build, what):
    """(bytes, sha) of the cache `name`, checked against its sha file; a missing, stale or
    corrupted one is rebuilt with build() (which returns the bytes), and caches of `name`
    built from older code are deleted."""
    data_path, sum_path = paths(target, name, key)
    try:
        data = data_path.read_bytes()
        digest = sha256_hex(data)
        if sum_path.read_text().strip() == digest:
            return data, digest
        progress(f"fixture cache {data_path.name} fails its hash: regenerating")
    except FileNotFoundError:
        progress(f"fixture cache missing: generating {what} (once)")
    except (OSError, ValueError) as e:
        progress(f"fixture cache unreadable ({e}): regenerating")
    data = build()
    digest = sha256_hex(data)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    for path, content in ((data_path, data), (sum_path, digest.encode())):
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    for stale in data_path.parent.glob(f"{name}-*"):
        if stale.stem != data_path.stem and ".tmp" not in stale.suffix:
            stale.unlink(missing_ok=True)
    return data, digest


def pack(groups):
    """npz bytes of {group: [dict of arrays, scalars, strings or NamedTuples of them]}."""
    arrays = {}
    for group, items in groups.items():
        for i, item in enumerate(items):
            for key, value in item.items():
                if isinstance(value, tuple):  # a NamedTuple: field by field
                    for field, part in zip(value._fields, value, strict=True):
                        arrays[f"{group}/{i}/{key}/{field}"] = np.asarray(part)
                else:
                    arrays[f"{group}/{i}/{key}"] = np.asarray(value)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(data, types):
    """pack's input back: {group: [dict]}; `types` maps a key to its NamedTuple class.
    Raises ValueError or KeyError for bytes pack did not write."""
    items, parts = {}, {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for name in npz.files:
            group, index, key, *field = name.split("/")
            value = npz[name]
            if value.ndim == 0:
                value = value.item()
            item = items.setdefault(group, {}).setdefault(int(index), {})
            if field:
                parts.setdefault((group, int(index), key), {})[field[0]] = value
            else:
                item[key] = value
    for (group, index, key), fields in parts.items():
        items[group][index][key] = types[key](**fields)
    return {group: [by_index[i] for i in sorted(by_index)] for group, by_index in items.items()}
