"""The disk cache: round trip, and damaged or foreign files ignored."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mxgate.core.snapshot import RoutingData
from mxgate.directory.cache import CacheError, CacheFile, decode, encode

DATA = RoutingData(
    domains={"example.com": "maila", "other.example": None},
    mailboxes={"a@example.com": "maila"},
    relays={"@other.example": "maila"},
    forwards={"b@example.com": ("x@example.net", "y@example.net")},
    transports={"example.com": {"": "smtp:[10.0.0.2]", "maila": "lmtp:unix:/run/lmtp"}},
    version=42,
)


def write(path: Path, data: RoutingData = DATA, seq: int = 1) -> CacheFile:
    cache = CacheFile(path)
    assert cache.write(encode(data, 1234.5), seq)
    return cache


def test_round_trip(tmp_path: Path) -> None:
    cache = write(tmp_path / "state" / "snapshot")
    assert cache.read() == (DATA, 1234.5)
    assert not list((tmp_path / "state").glob(".*tmp"))
    assert (tmp_path / "state" / "snapshot").stat().st_mode & 0o777 == 0o600


def test_missing_file_is_no_snapshot(tmp_path: Path) -> None:
    assert CacheFile(tmp_path / "nothing").read() is None


@pytest.mark.parametrize("keep", [0, 10, 30, -1])
def test_truncated_file_is_ignored(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "snapshot"
    write(path)
    blob = path.read_bytes()
    path.write_bytes(blob[:keep] if keep >= 0 else blob[:-1])
    assert CacheFile(path).read() is None


def test_flipped_byte_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "snapshot"
    write(path)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0x01
    path.write_bytes(bytes(blob))
    assert CacheFile(path).read() is None
    with pytest.raises(CacheError, match="checksum"):
        decode(bytes(blob))


def test_other_format_or_magic_is_ignored() -> None:
    header, payload = encode(DATA, 0.0)
    with pytest.raises(CacheError, match="not a snapshot"):
        decode(b"X" + header[1:] + payload)
    with pytest.raises(CacheError, match="another version"):
        decode(header[:16] + b"\x09\x00" + header[18:] + payload)


def test_file_writable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "snapshot"
    write(path)
    os.chmod(path, 0o666)
    assert CacheFile(path).read() is None


def test_an_older_write_never_replaces_a_newer_one(tmp_path: Path) -> None:
    path = tmp_path / "snapshot"
    cache = write(path, seq=5)
    newer = RoutingData(version=99)
    assert not cache.write(encode(newer, 0.0), 4)
    assert cache.read() == (DATA, 1234.5)
    assert cache.write(encode(newer, 0.0), 6)
    assert cache.read() == (newer, 0.0)
