"""``seqblocks.save`` / ``seqblocks.load``: checkpoints that never execute code on load.

Format (version 1): a ZIP archive (stored, not compressed) holding

- ``seqblocks.json`` — ``{"format": "seqblocks-checkpoint", "version": 1, "root": node}`` where a
  node is ``{"t": "dict", "items": [[key_node, value_node], ...]}`` (keys keep their type: str,
  int, float, bool, None, tuple), ``{"t": "list"|"tuple", "items": [...]}``,
  ``{"t": "array", "entry": "arrays/<n>.npy"}``, ``{"t": "scalar", "entry": ...}`` (a NumPy
  scalar), ``{"t": "int"|"str"|"bool", "v": ...}``, ``{"t": "float", "v": repr}`` (NaN/inf
  included) or ``{"t": "none"}``;
- ``arrays/<n>.npy`` — one ``.npy`` per array, read back with ``allow_pickle=False`` (object
  arrays are refused at save time).

Tensors and Parameters are saved as their arrays (loading gives NumPy arrays, which
``Module.load_state_dict`` and ``Optimizer.load_state_dict`` accept).

``save`` is atomic: it writes a temporary file in the destination directory, fsyncs it, then
``os.replace``s it over ``path`` (and fsyncs the directory), so a crash at any point leaves either
the old file or the complete new one. ``load`` reads only stored (uncompressed) entries whose
sizes are backed by the file, checks every ``.npy`` header against its entry size before
allocating, refuses object dtypes, and verifies each entry's CRC-32. ``load`` turns every malformed input (truncated, corrupt,
foreign, wrong version, entries missing) into ``CheckpointError`` (a ``ValueError``) naming the
path; a missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import threading
import zipfile
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "load", "save"]

FORMAT = "seqblocks-checkpoint"
VERSION = 1
MANIFEST = "seqblocks.json"
_MAX_DEPTH = 200


class CheckpointError(ValueError):
    """A file is not a readable seqblocks checkpoint."""


def _where(path: list) -> str:
    return "obj" + "".join(f"[{p!r}]" for p in path)


class _Writer:
    def __init__(self) -> None:
        self.arrays: list[tuple[str, np.ndarray]] = []

    def _entry(self, arr: np.ndarray, where: list) -> str:
        if arr.dtype.hasobject:
            raise TypeError(f"{_where(where)}: cannot save an array of dtype {arr.dtype} (object arrays need pickle)")
        name = f"arrays/{len(self.arrays)}.npy"
        self.arrays.append((name, arr))
        return name

    def node(self, obj: Any, where: list) -> dict:
        from .autograd import Tensor

        if len(where) > _MAX_DEPTH:
            raise ValueError(f"{_where(where[:5])}...: nesting deeper than {_MAX_DEPTH} levels")
        if obj is None:
            return {"t": "none"}
        if isinstance(obj, bool):
            return {"t": "bool", "v": obj}
        if isinstance(obj, int):
            return {"t": "int", "v": str(obj)}
        if isinstance(obj, float):
            return {"t": "float", "v": repr(obj)}
        if isinstance(obj, str):
            return {"t": "str", "v": obj}
        if isinstance(obj, Tensor):
            obj = obj.data
        if isinstance(obj, np.ndarray):
            return {"t": "array", "entry": self._entry(obj, where)}
        if isinstance(obj, np.generic):
            return {"t": "scalar", "entry": self._entry(np.asarray(obj), where)}
        if isinstance(obj, dict):
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (str, int, float, bool, tuple))):
                    raise TypeError(f"{_where(where)}: cannot save a dict key of type {type(k).__name__}")
                items.append([self.node(k, where + [k]), self.node(v, where + [k])])
            return {"t": "dict", "items": items}
        if isinstance(obj, (list, tuple)):
            return {"t": "list" if isinstance(obj, list) else "tuple",
                    "items": [self.node(v, where + [i]) for i, v in enumerate(obj)]}
        raise TypeError(f"{_where(where)}: cannot save an object of type {type(obj).__name__} "
                        "(supported: dict, list, tuple, NumPy arrays and scalars, Tensors, int, float, "
                        "bool, str, None)")


def _write_zip(fileobj, manifest: dict, arrays: list) -> None:
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, separators=(",", ":")))
        for name, arr in arrays:
            with zf.open(name, "w", force_zip64=arr.nbytes > (1 << 30)) as f:
                np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)


_umask_lock = threading.Lock()
_umask_value: list = []


def _umask() -> int:
    with _umask_lock:
        if not _umask_value:
            mask = os.umask(0)
            os.umask(mask)
            _umask_value.append(mask)
        return _umask_value[0]


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(obj: Any, f) -> None:
    """Save nested dicts/lists/tuples of arrays, Tensors, numbers, strings and None to ``f`` (a
    path, written atomically, or a writable binary file object)."""
    writer = _Writer()
    manifest = {"format": FORMAT, "version": VERSION, "root": writer.node(obj, [])}
    if hasattr(f, "write"):
        _write_zip(f, manifest, writer.arrays)
        return
    path = os.fspath(f)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            _write_zip(out, manifest, writer.arrays)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


class _Reader:
    def __init__(self, zf: zipfile.ZipFile, name: str, archive_size: int) -> None:
        self.zf = zf
        self.name = name
        self.archive_size = archive_size
        self.entries = set(zf.namelist())

    def fail(self, message: str):
        raise CheckpointError(f"{self.name}: {message}")

    def open(self, entry: str):
        """An entry, after checking that its declared size is backed by bytes of the file (no
        allocation is ever sized by an unchecked header)."""
        info = self.zf.getinfo(entry)
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size \
                or info.file_size > self.archive_size:
            self.fail(f"entry {entry!r} is not a stored entry of a plausible size")
        return self.zf.open(info), info.file_size

    def read(self, entry: str) -> bytes:
        f, _ = self.open(entry)
        with f:
            return f.read()

    def array(self, node: dict) -> np.ndarray:
        entry = node.get("entry")
        if not isinstance(entry, str) or entry not in self.entries:
            self.fail(f"array entry {entry!r} is missing")
        f, size = self.open(entry)
        with f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                self.fail(f"array entry {entry!r} has .npy version {version}")
            if dtype.hasobject:
                self.fail(f"array entry {entry!r} holds Python objects (dtype {dtype}); refusing to unpickle")
            count = 1
            for d in shape:
                count *= d
            nbytes = count * dtype.itemsize
            if nbytes != size - f.tell():
                self.fail(f"array entry {entry!r} declares {nbytes} bytes of data, the entry holds {size - f.tell()}")
            arr = np.empty(count, dtype)
            view = memoryview(arr.view(np.uint8)) if nbytes else None
            got = f.readinto(view) if nbytes else 0
            if got != nbytes:
                self.fail(f"array entry {entry!r} is truncated")
            if f.read(1):  # reading to the end also makes zipfile verify the entry's CRC-32
                self.fail(f"array entry {entry!r} has trailing bytes")
        return arr.reshape(shape, order="F" if fortran else "C")

    def node(self, node: Any, depth: int = 0):
        if depth > _MAX_DEPTH + 2:
            self.fail("manifest nested too deeply")
        if not isinstance(node, dict) or "t" not in node:
            self.fail(f"malformed manifest node {str(node)[:80]!r}")
        t = node["t"]
        if t == "none":
            return None
        if t == "bool":
            return bool(node["v"])
        if t == "int":
            return int(node["v"])
        if t == "float":
            return float(node["v"])
        if t == "str":
            if not isinstance(node["v"], str):
                self.fail("malformed string node")
            return node["v"]
        if t == "array":
            return self.array(node)
        if t == "scalar":
            arr = self.array(node)
            if arr.ndim != 0:
                self.fail("scalar entry is not 0-d")
            return arr[()]
        if t in ("list", "tuple"):
            items = [self.node(v, depth + 1) for v in node["items"]]
            return items if t == "list" else tuple(items)
        if t == "dict":
            out = {}
            for pair in node["items"]:
                if not isinstance(pair, list) or len(pair) != 2:
                    self.fail("malformed dict item")
                key = self.node(pair[0], depth + 1)
                if isinstance(key, (list, dict, np.ndarray)):
                    self.fail("unhashable dict key")
                out[key] = self.node(pair[1], depth + 1)
            return out
        self.fail(f"unknown node type {t!r}")


def load(f, map_location=None, weights_only: bool = True):
    """Load what ``save`` wrote (arrays come back as NumPy arrays). Never executes code.

    Raises ``CheckpointError`` (a ValueError) naming the file for anything that is not a complete
    seqblocks checkpoint. ``map_location`` and ``weights_only`` are accepted for PyTorch
    compatibility and ignored (everything is CPU NumPy; nothing but data is ever loaded).
    """
    is_file = hasattr(f, "read")
    if is_file:
        name = getattr(f, "name", "<file object>")
        source = f
    else:
        name = os.fspath(f)
        if not os.path.exists(name):
            raise FileNotFoundError(f"{name}: no such file")
        source = name
    try:
        if is_file:
            start = f.tell()
            archive_size = f.seek(0, os.SEEK_END) - start
            f.seek(start)
        else:
            archive_size = os.path.getsize(name)
        with zipfile.ZipFile(source, "r") as zf:
            if MANIFEST not in zf.namelist():
                raise CheckpointError(f"{name}: not a seqblocks checkpoint (no {MANIFEST} entry)")
            reader = _Reader(zf, name, archive_size)
            raw = reader.read(MANIFEST)
            try:
                manifest = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise CheckpointError(f"{name}: corrupt manifest ({exc})") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise CheckpointError(f"{name}: not a seqblocks checkpoint (format {str(manifest)[:60]!r})")
            if manifest.get("version") != VERSION:
                raise CheckpointError(f"{name}: checkpoint version {manifest.get('version')!r} is not supported "
                                      f"(this seqblocks reads version {VERSION})")
            return reader.node(manifest.get("root"))
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, KeyError, ValueError, TypeError,
            IndexError, OverflowError, struct.error, RecursionError, NotImplementedError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{name}: not a readable seqblocks checkpoint "
                              f"(truncated or corrupt: {type(exc).__name__}: {exc})") from exc
