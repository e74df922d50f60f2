"""Bucket checksum and bucket files (weight_sync.buckets): every single-byte flip, swapped blocks, a
bucket of another version and truncation are detected before any tensor is handed out; round trips
are exact; retired files are recycled. Pure file I/O on tmp_path, no engine."""

from __future__ import annotations

import os
import shutil

import pytest

torch = pytest.importorskip("torch")

from iquest_rl.weight_sync.buckets import (  # noqa: E402
    SPARE_DIR,
    FileMaps,
    WeightSyncError,
    checksum,
    clear_spares,
    read_buckets,
    remove_update,
    write_buckets,
)


def _tensors(seed: int = 0) -> list[tuple[str, object]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("model.embed_tokens.weight", torch.randn(16, 8, generator=g)),
        ("model.layers.0.input_layernorm.weight", torch.randn(8, generator=g)),
        ("model.layers.0.self_attn.q_proj.weight", torch.randn(8, 8, generator=g).to(torch.bfloat16)),
        ("model.layers.0.self_attn.k_proj.weight", torch.randn(8, 8, generator=g).to(torch.bfloat16)),
        ("model.odd", torch.randn(3, generator=g).to(torch.bfloat16)),  # 6 bytes: later offsets unaligned
        ("model.steps", torch.tensor(7, dtype=torch.int64)),
        ("lm_head.weight", torch.randn(16, 8, generator=g)),
    ]


def _read_all(update):
    return list(read_buckets(update))


def test_checksum_detects_every_single_byte_flip():
    g = torch.Generator().manual_seed(1)
    data = bytearray(torch.randint(0, 256, (4099,), dtype=torch.uint8, generator=g).numpy().tobytes())
    base = checksum(bytes(data))
    seen = {base}
    for i in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            data[i] ^= mask
            c = checksum(bytes(data))
            data[i] ^= mask
            assert c != base, f"flip {mask:#x} at byte {i} not detected"
            seen.add(c)
    assert len(seen) == 1 + 3 * len(data)  # and no two single flips collide with each other
    assert checksum(bytes(data)) == base  # deterministic


@pytest.mark.parametrize("block", [1, 8, 64, 1000])
def test_checksum_detects_swapped_and_shifted_blocks(block):
    g = torch.Generator().manual_seed(2)
    data = torch.randint(0, 256, (8 * block,), dtype=torch.uint8, generator=g).numpy().tobytes()
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    base = checksum(data)
    for a, b in [(0, 1), (0, 7), (3, 5)]:
        swapped = list(blocks)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        assert checksum(b"".join(swapped)) != base, f"blocks {a} and {b} of {block} bytes swapped"
    assert checksum(data[block:] + data[:block]) != base  # rotated
    assert checksum(data[:-1]) != base and checksum(data + b"\0") != base  # truncated / extended
    # Two words whose sum is unchanged (what a plain additive checksum would miss).
    w = bytearray(data)
    w[0], w[1] = (w[0] + 1) % 256, (w[1] - 1) % 256
    if bytes(w) != data:
        assert checksum(bytes(w)) != base


def test_round_trip_keeps_bytes_order_and_dtypes(tmp_path):
    named = _tensors()
    update = write_buckets(named, tmp_path, version=3, bucket_bytes=600)
    assert len(update.bucket_paths) > 1 and len(update.sizes) == len(update.bucket_paths)
    assert [n for b in update.names for n in b] == [n for n, _ in named]
    got = _read_all(update)
    assert [n for n, _ in got] == [n for n, _ in named]
    for (n, want), (_, t) in zip(named, got):
        assert t.dtype == want.dtype and t.shape == want.shape and torch.equal(t, want), n
    # The files keep the safetensors layout (readable by safetensors itself, version stamped).
    from safetensors import safe_open

    with safe_open(update.bucket_paths[0], framework="pt") as f:
        assert f.metadata()["version"] == "3"
        first = update.names[0][0]
        assert torch.equal(f.get_tensor(first), dict(named)[first])
    assert update.probe and update.probe_names == ["lm_head.weight", "model.embed_tokens.weight",
                                                   "model.layers.0.input_layernorm.weight"]


def test_any_flipped_byte_of_a_bucket_file_is_rejected(tmp_path):
    update = write_buckets(_tensors(), tmp_path, version=1, bucket_bytes=1 << 20)
    path = update.bucket_paths[0]
    clean = open(path, "rb").read()
    for i in range(len(clean)):  # header length, JSON header (names, shapes, version) and data
        raw = bytearray(clean)
        raw[i] ^= 0x01 if i % 2 else 0x80
        open(path, "wb").write(bytes(raw))
        with pytest.raises(WeightSyncError, match="checksum") as e:
            _read_all(update)
        assert path in str(e.value) and "version 1" in str(e.value)
    open(path, "wb").write(clean)
    assert len(_read_all(update)) == len(_tensors())


def test_swapped_tensors_and_a_bucket_of_another_version_are_rejected(tmp_path):
    update = write_buckets(_tensors(), tmp_path, version=1, bucket_bytes=1 << 20)
    path = update.bucket_paths[0]
    raw = bytearray(open(path, "rb").read())
    # q_proj and k_proj have the same shape and dtype: swap their data blocks.
    import json
    import struct

    hlen = struct.unpack("<Q", raw[:8])[0]
    meta = json.loads(raw[8:8 + hlen])
    (qa, qb), (ka, kb) = (meta[f"model.layers.0.self_attn.{p}_proj.weight"]["data_offsets"] for p in "qk")
    base = 8 + hlen
    q, k = raw[base + qa:base + qb], raw[base + ka:base + kb]
    assert q != k
    raw[base + qa:base + qb], raw[base + ka:base + kb] = k, q
    open(path, "wb").write(bytes(raw))
    with pytest.raises(WeightSyncError, match="checksum"):
        _read_all(update)

    # Same tensors sent as version 2, but the file of version 1 is what the reader finds.
    v1 = write_buckets(_tensors(), tmp_path / "a", version=1, bucket_bytes=1 << 20)
    v2 = write_buckets(_tensors(), tmp_path / "a", version=2, bucket_bytes=1 << 20)
    shutil.copyfile(v1.bucket_paths[0], v2.bucket_paths[0])
    with pytest.raises(WeightSyncError, match="checksum"):
        _read_all(v2)


def test_truncated_extended_or_missing_bucket_is_unreadable(tmp_path):
    update = write_buckets(_tensors(), tmp_path, version=1, bucket_bytes=600)
    path = update.bucket_paths[-1]
    clean = open(path, "rb").read()
    for cut in (0, 7, 100, len(clean) - 1):
        open(path, "wb").write(clean[:cut])
        with pytest.raises(WeightSyncError, match="unreadable"):
            _read_all(update)
    open(path, "wb").write(clean + b"\0")
    with pytest.raises(WeightSyncError, match="unreadable"):
        _read_all(update)
    os.unlink(path)
    with pytest.raises(WeightSyncError, match="unreadable"):
        _read_all(update)


def test_no_tensor_is_handed_out_before_every_bucket_is_verified(tmp_path):
    """The vLLM extension materialises read_buckets before loading: a bad LAST bucket fails it all."""
    update = write_buckets(_tensors(), tmp_path, version=1, bucket_bytes=600)
    raw = bytearray(open(update.bucket_paths[-1], "rb").read())
    raw[-1] ^= 0xFF
    open(update.bucket_paths[-1], "wb").write(bytes(raw))
    loaded = []
    with pytest.raises(WeightSyncError, match="checksum"):
        loaded = list(read_buckets(update))
    assert loaded == []


def test_retired_files_are_recycled_and_their_maps_reused(tmp_path):
    reader = FileMaps()
    v1 = write_buckets(_tensors(0), tmp_path, version=1, bucket_bytes=600)
    got1 = [t.clone() for _, t in read_buckets(v1, reader)]
    maps = sorted(reader.ranges())
    assert len(maps) == len(v1.bucket_paths)
    inodes = {os.stat(p).st_ino for p in v1.bucket_paths}
    remove_update(v1)
    assert not (tmp_path / "v1").exists()
    assert len(list((tmp_path / SPARE_DIR).iterdir())) == len(v1.bucket_paths)

    v2 = write_buckets(_tensors(1), tmp_path, version=2, bucket_bytes=600)
    assert {os.stat(p).st_ino for p in v2.bucket_paths} == inodes  # same files, rewritten
    assert list((tmp_path / SPARE_DIR).iterdir()) == []
    got2 = list(read_buckets(v2, reader))
    assert sorted(reader.ranges()) == maps  # read through the maps made for v1's files
    for (n, want), (_, t) in zip(_tensors(1), got2):
        assert torch.equal(t, want), n
    assert not all(torch.equal(a, b) for a, (_, b) in zip(got1, got2))

    # A smaller model next: the spare files are truncated to size, extra spares deleted.
    remove_update(v2)
    v3 = write_buckets(_tensors(2)[:2], tmp_path, version=3, bucket_bytes=1 << 20)
    assert [n for n, _ in _read_all(v3)] == [n for n, _ in _tensors()[:2]]
    assert list((tmp_path / SPARE_DIR).iterdir()) == []
    remove_update(v3)
    clear_spares(tmp_path)
    assert not (tmp_path / SPARE_DIR).exists()


def test_a_reader_that_kept_its_maps_sees_later_corruption_and_truncation(tmp_path):
    """Maps are kept across updates (keyed by inode): a file changed or truncated after it was mapped
    is still checked against its sent checksum and size, so nothing stale or past the end is read."""
    reader = FileMaps()
    update = write_buckets(_tensors(), tmp_path, version=1, bucket_bytes=1 << 20)
    assert len(list(read_buckets(update, reader))) == len(_tensors())
    path = update.bucket_paths[0]
    clean = open(path, "rb").read()
    with open(path, "r+b") as f:  # in place: same inode, same size, one byte flipped
        f.seek(len(clean) - 3)
        f.write(bytes([clean[-3] ^ 0x10]))
    with pytest.raises(WeightSyncError, match="checksum"):
        list(read_buckets(update, reader))
    with open(path, "r+b") as f:
        f.truncate(len(clean) // 2)
    with pytest.raises(WeightSyncError, match="unreadable"):
        list(read_buckets(update, reader))
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(clean)
    got = list(read_buckets(update, reader))
    for (n, want), (_, t) in zip(_tensors(), got):
        assert torch.equal(t, want), n
