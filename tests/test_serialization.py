"""seqblocks.save / seqblocks.load: round trips of nested state, atomic writes (failures injected
mid-write leave the old file intact and no temporary behind), and truncated, corrupt, foreign and
malicious files raising CheckpointError naming the path."""

import io
import json
import math
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest

import seqblocks
from seqblocks import CheckpointError, nn, optim
from seqblocks import serialization


def sample():
    rng = np.random.default_rng(0)
    return {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64_fortran": np.asfortranarray(rng.standard_normal((5, 2))),
        "strided": np.arange(20, dtype=np.int64)[::3],
        "ints": {"u8": np.arange(4, dtype=np.uint8), "i16": np.array([-3, 7], np.int16), "bool": np.array([True, False])},
        "zero_d": np.array(2.5),
        "empty": np.zeros((0, 7), np.float32),
        "np_scalar": np.float32(1.25),
        "np_int": np.int64(-9),
        "list": [1, 2.0, "three", None, True, [np.ones(2)]],
        "tuple": (1, (2, 3)),
        3: "int key",
        (1, "a"): "tuple key",
        None: 1.0,
        2.5: "float key",
        "big": 2 ** 80,
        "floats": [float("nan"), float("inf"), -float("inf"), -0.0, 1e-310, 0.1],
        "unicode": "héllo ✓",
    }


def assert_equal_tree(a, b, where="obj"):
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_equal_tree(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_tree(x, y, f"{where}[{i}]")
    elif isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and np.shape(a) == np.shape(b), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b)), where


def test_round_trip(tmp_path):
    obj = sample()
    seqblocks.save(obj, tmp_path / "a.sb")
    assert_equal_tree(obj, seqblocks.load(tmp_path / "a.sb"))
    seqblocks.save(obj, str(tmp_path / "b.sb"))  # str paths too
    assert_equal_tree(obj, seqblocks.load(str(tmp_path / "b.sb")))


def test_round_trip_file_objects():
    buf = io.BytesIO()
    seqblocks.save(sample(), buf)
    buf.seek(0)
    assert_equal_tree(sample(), seqblocks.load(buf))


def test_tensors_are_saved_as_arrays(tmp_path):
    t = seqblocks.tensor([1.0, 2.0], requires_grad=True)
    p = nn.Parameter(np.ones(3))
    seqblocks.save({"t": t, "p": p}, tmp_path / "t.sb")
    out = seqblocks.load(tmp_path / "t.sb")
    assert isinstance(out["t"], np.ndarray) and out["t"].dtype == np.float32
    np.testing.assert_array_equal(out["p"], np.ones(3))


def test_model_and_optimizer_checkpoint(tmp_path):
    seqblocks.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.Linear(4, 3), nn.LayerNorm(3))
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    model(np.array([[1, 2, 0]])).sum().backward()
    opt.step()
    seqblocks.save({"model": model.state_dict(), "optim": opt.state_dict(), "epoch": 3,
                    "rng": seqblocks.get_rng_state()}, tmp_path / "ckpt.sb")
    ckpt = seqblocks.load(tmp_path / "ckpt.sb")
    seqblocks.manual_seed(1)
    model2 = nn.Sequential(nn.Embedding(10, 4, padding_idx=0), nn.Linear(4, 3), nn.LayerNorm(3))
    model2.load_state_dict(ckpt["model"])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(model2.state_dict()[k], v)
    opt2 = optim.AdamW(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(ckpt["optim"])
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    assert ckpt["epoch"] == 3 and opt2.state_dict()["state"][0]["step"] == 1


def test_file_mode_follows_umask(tmp_path):
    seqblocks.save({"a": 1}, tmp_path / "m.sb")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "m.sb").st_mode) == 0o666 & ~mask


# ------------------------------------------------------------------------- atomic writes


def _leftovers(directory):
    return [n for n in os.listdir(directory) if n.endswith(".tmp")]


@pytest.mark.parametrize("where", ["write_array", "fsync", "replace", "keyboard_interrupt"])
def test_failure_mid_write_keeps_the_old_file(tmp_path, monkeypatch, where):
    path = tmp_path / "ckpt.sb"
    old = {"version": "old", "w": np.arange(5.0)}
    seqblocks.save(old, path)
    before = path.read_bytes()
    calls = []

    def boom(*args, **kwargs):
        calls.append(1)
        if where == "keyboard_interrupt":
            raise KeyboardInterrupt
        raise OSError("disk full (injected)")

    if where in ("write_array", "keyboard_interrupt"):
        real = np.lib.format.write_array

        def write_then_fail(f, arr, *args, **kwargs):
            if arr.size == 1000:  # the second array: the archive is half written
                f.write(b"partial")
                boom()
            return real(f, arr, *args, **kwargs)

        monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:
        monkeypatch.setattr(os, "replace", boom)
    expected = KeyboardInterrupt if where == "keyboard_interrupt" else OSError
    with pytest.raises(expected):
        seqblocks.save({"version": "new", "a": np.zeros(3), "b": np.zeros(1000)}, path)
    assert calls
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert_equal_tree(old, seqblocks.load(path))
    assert _leftovers(tmp_path) == []


def test_save_fsyncs_before_replace(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    seqblocks.save({"a": np.ones(3)}, tmp_path / "x.sb")
    assert events[:2] == ["fsync", "replace"]


def test_unsupported_objects_are_refused_before_writing(tmp_path):
    path = tmp_path / "bad.sb"
    with pytest.raises(TypeError, match=r"obj\['a'\]\[1\].*set"):
        seqblocks.save({"a": [1, {2}]}, path)
    with pytest.raises(TypeError, match="object"):
        seqblocks.save({"o": np.array([None, 1], dtype=object)}, path)
    with pytest.raises(TypeError, match="dict key"):
        seqblocks.save({frozenset(): 1}, path)
    assert not path.exists() and _leftovers(tmp_path) == []


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.sb"
    seqblocks.save({"w": np.arange(1000, dtype=np.float32), "name": "x"}, path)
    return path


def expect_error(path, match="not a"):
    with pytest.raises(CheckpointError, match=match) as info:
        seqblocks.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("keep", [0, 1, 10, 100, 0.5, -22, -1])
def test_truncated(tmp_path, good, keep):
    data = good.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else (keep if keep >= 0 else len(data) + keep)
    path = tmp_path / "truncated.sb"
    path.write_bytes(data[:n])
    expect_error(path, match="checkpoint")


def test_corrupt_array_bytes(tmp_path, good):
    data = bytearray(good.read_bytes())
    pos = data.find(b"\x00\x00\x80\x3f")  # 1.0f inside the array data
    assert pos > 0
    data[pos + 3] ^= 0xFF
    path = tmp_path / "corrupt.sb"
    path.write_bytes(bytes(data))
    expect_error(path, match="corrupt|CRC")


def test_corrupt_manifest(tmp_path, good):
    data = bytearray(good.read_bytes())
    pos = data.find(b'"format"')
    data[pos + 1] = ord("X")
    path = tmp_path / "manifest.sb"
    path.write_bytes(bytes(data))
    expect_error(path, match="checkpoint")


@pytest.mark.parametrize("kind", ["text", "empty_zip", "npz", "pickle", "torch", "random"])
def test_foreign_files(tmp_path, kind):
    path = tmp_path / f"foreign.{kind}"
    if kind == "text":
        path.write_text("hello\n")
    elif kind == "empty_zip":
        with zipfile.ZipFile(path, "w"):
            pass
    elif kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.ones(3))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "torch":
        torch = pytest.importorskip("torch")
        torch.save({"a": torch.ones(2)}, path)
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    expect_error(path, match="not a")


def _craft(path, manifest, entries=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(serialization.MANIFEST, manifest if isinstance(manifest, str) else json.dumps(manifest))
        for name, data in entries:
            zf.writestr(name, data)


@pytest.mark.parametrize("manifest,match", [
    ("{not json", "corrupt manifest"),
    ({"format": "other"}, "not a seqblocks checkpoint"),
    ({"format": "seqblocks-checkpoint", "version": 99, "root": {"t": "none"}}, "version 99"),
    ({"format": "seqblocks-checkpoint", "version": 1, "root": {"t": "array", "entry": "arrays/7.npy"}}, "missing"),
    ({"format": "seqblocks-checkpoint", "version": 1, "root": {"t": "eval", "v": "1"}}, "unknown node type"),
    ({"format": "seqblocks-checkpoint", "version": 1, "root": [1]}, "malformed"),
    ({"format": "seqblocks-checkpoint", "version": 1, "root": {"t": "int", "v": "x"}}, "truncated or corrupt"),
    ({"format": "seqblocks-checkpoint", "version": 1, "root": {"t": "dict", "items": [[{"t": "list", "items": []},
                                                                                      {"t": "none"}]]}}, "unhashable"),
])
def test_malformed_manifests(tmp_path, manifest, match):
    path = tmp_path / "m.sb"
    _craft(path, manifest)
    expect_error(path, match=match)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_payload_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    np.save(buf, np.array([_Exploit()], dtype=object), allow_pickle=True)
    path = tmp_path / "evil.sb"
    _craft(path, {"format": "seqblocks-checkpoint", "version": 1, "root": {"t": "array", "entry": "arrays/0.npy"}},
           [("arrays/0.npy", buf.getvalue())])
    expect_error(path, match="Python objects")
    assert not (tmp_path / "pwned").exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.sb"):
        seqblocks.load(tmp_path / "nope.sb")


def test_rng_state_round_trip(tmp_path):
    seqblocks.manual_seed(9)
    seqblocks.save({"rng": seqblocks.get_rng_state()}, tmp_path / "rng.sb")
    first = nn.Linear(5, 5).weight.data.copy()
    seqblocks.manual_seed(1)
    seqblocks.set_rng_state(seqblocks.load(tmp_path / "rng.sb")["rng"])
    np.testing.assert_array_equal(nn.Linear(5, 5).weight.data, first)
    with pytest.raises(ValueError, match="get_rng_state"):
        seqblocks.set_rng_state({"x": 1})


def test_huge_declared_array_is_refused_without_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 12,)})
    path = tmp_path / "huge.sb"
    _craft(path, {"format": "seqblocks-checkpoint", "version": 1, "root": {"t": "array", "entry": "arrays/0.npy"}},
           [("arrays/0.npy", header.getvalue() + b"\0" * 64)])
    expect_error(path, match="declares 8000000000000 bytes")


def test_compressed_entries_are_refused(tmp_path):
    path = tmp_path / "deflated.sb"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(serialization.MANIFEST, json.dumps({"format": "seqblocks-checkpoint", "version": 1,
                                                         "root": {"t": "none"}}))
    expect_error(path, match="stored entry")


def test_random_byte_flips_never_crash(tmp_path):
    obj = {"w": np.arange(64, dtype=np.float32).reshape(8, 8), "meta": {"step": 3, "name": "x"}, "l": [1.5, None]}
    good_path = tmp_path / "good.sb"
    seqblocks.save(obj, good_path)
    data = good_path.read_bytes()
    rng = np.random.default_rng(0)
    path = tmp_path / "flipped.sb"
    outcomes = {"error": 0, "same": 0}
    for _ in range(300):
        corrupted = bytearray(data)
        pos = int(rng.integers(len(data)))
        corrupted[pos] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(corrupted))
        try:
            loaded = seqblocks.load(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)
            outcomes["error"] += 1
            continue
        assert_equal_tree(obj, loaded)  # a flip that loads must not have changed the content
        outcomes["same"] += 1
    assert outcomes["error"] > 250
