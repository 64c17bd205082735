"""TensorFlow checkpoints (``tf.train.Saver``'s V2 format) read without TensorFlow.

A checkpoint folder holds:

* ``checkpoint``: a text proto whose ``model_checkpoint_path`` names the prefix (``model``);
* ``<prefix>.index``: a LevelDB-style sorted string table (uncompressed blocks of
  prefix-compressed entries, an index block, a 48-byte footer ending in TensorFlow's
  table magic), mapping each variable's name to a ``BundleEntryProto`` (dtype, shape,
  shard, offset, size); the empty key holds the ``BundleHeaderProto`` (shard count,
  endianness);
* ``<prefix>.data-<shard>-of-<count>``: the tensors' raw bytes, one after another.

This module parses those three with the standard library and NumPy (the two protos by
their field numbers), so StemBridge runs Spleeter's released models without TensorFlow
and without converting them. Sliced (partitioned) variables and string tensors are not
read: Spleeter's checkpoints have neither. The per-tensor CRC32C is not checked (it would
take a pure-Python CRC over the whole file); sizes and offsets are, against the shapes and
the data file's length.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bridge.errors import ModelCorrupt

#: ``kTableMagicNumber`` of TensorFlow's ``lib/io/table`` (LevelDB's differs).
TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_BYTES = 48
#: TensorFlow ``DataType`` numbers of the dtypes a checkpoint of weights holds.
_DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    19: np.dtype("<f2"),
}
_CHECKPOINT_PATH = re.compile(r'^model_checkpoint_path:\s*"((?:[^"\\]|\\.)*)"', re.MULTILINE)


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable's tensor lies.

    Attributes:
        dtype: Its element type.
        shape: Its shape.
        shard: The data file holding it.
        offset: Its first byte in that file.
        size: Its length in bytes.
    """

    dtype: np.dtype
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's variables, read lazily from its data files.

    Attributes:
        prefix: The path its files start with (``<folder>/model``).
        entries: Each variable's name and where its tensor lies.
        shards: The number of data files.
    """

    prefix: Path
    entries: dict[str, TensorEntry]
    shards: int

    def data_file(self, shard: int) -> Path:
        """The data file of one shard (``model.data-00000-of-00001``)."""
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.shards:05d}")

    def read(self, name: str) -> np.ndarray:
        """One variable's tensor (a fresh array).

        Raises:
            ModelCorrupt: The checkpoint has no such variable, or its bytes are missing.
        """
        entry = self.entries.get(name)
        if entry is None:
            raise ModelCorrupt(
                f"{self.prefix}.index: no variable {name}; the checkpoint is not the "
                "model's: use the official release folder",
                path=self.prefix.with_name(self.prefix.name + ".index"),
            )
        path = self.data_file(entry.shard)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * entry.dtype.itemsize != entry.size:
            raise ModelCorrupt(
                f"{path}: variable {name} is {entry.size} bytes, its shape "
                f"{list(entry.shape)} needs {count * entry.dtype.itemsize}; the checkpoint "
                "is damaged: download it again",
                path=path,
            )
        try:
            with open(path, "rb") as file:
                file.seek(entry.offset)
                raw = file.read(entry.size)
        except OSError as exc:
            raise ModelCorrupt(
                f"{path}: cannot be read ({exc}); download the model again", path=path
            ) from exc
        if len(raw) != entry.size:
            raise ModelCorrupt(
                f"{path}: cut short (variable {name} needs bytes {entry.offset} to "
                f"{entry.offset + entry.size}); download the model again",
                path=path,
            )
        return np.frombuffer(raw, dtype=entry.dtype).reshape(entry.shape).copy()


def checkpoint_prefix(folder: Path) -> Path:
    """The prefix the folder's ``checkpoint`` file names (as ``tf.train.latest_checkpoint``).

    Raises:
        ModelCorrupt: No ``checkpoint`` file, or it names no checkpoint.
    """
    state = folder / "checkpoint"
    try:
        text = state.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelCorrupt(
            f"{state}: cannot be read ({exc}); a TensorFlow checkpoint folder needs its "
            "checkpoint file: use the official release folder",
            path=state,
        ) from exc
    found = _CHECKPOINT_PATH.search(text)
    if found is None:
        raise ModelCorrupt(
            f"{state}: names no model_checkpoint_path; use the official release folder",
            path=state,
        )
    named = Path(found.group(1).encode("utf-8").decode("unicode_escape"))
    return named if named.is_absolute() else folder / named


def read_checkpoint(prefix: Path) -> Checkpoint:
    """Read ``<prefix>.index``: every variable's dtype, shape and place.

    Raises:
        ModelCorrupt: The index is missing, damaged or not a TensorFlow V2 checkpoint,
            or a data file it needs is missing or shorter than its tensors.
    """
    index = prefix.with_name(prefix.name + ".index")
    try:
        table = index.read_bytes()
    except OSError as exc:
        raise ModelCorrupt(
            f"{index}: cannot be read ({exc}); use the official release folder", path=index
        ) from exc
    try:
        pairs = _table_entries(table)
        header = _header(pairs.pop(b"", b""))
        entries = {key.decode("utf-8"): _entry(value) for key, value in pairs.items()}
    except (ValueError, IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ModelCorrupt(
            f"{index}: not a TensorFlow checkpoint index ({exc}); download the model again",
            path=index,
        ) from exc
    checkpoint = Checkpoint(prefix, entries, header)
    _check_data(checkpoint)
    return checkpoint


def _check_data(checkpoint: Checkpoint) -> None:
    """Every data file is there and long enough for the tensors it holds."""
    needed: dict[int, int] = {}
    for entry in checkpoint.entries.values():
        needed[entry.shard] = max(needed.get(entry.shard, 0), entry.offset + entry.size)
    for shard, end in sorted(needed.items()):
        path = checkpoint.data_file(shard)
        if not path.is_file():
            raise ModelCorrupt(
                f"{path}: missing (the checkpoint index names it); put the release "
                "folder's files back together",
                path=path,
            )
        size = path.stat().st_size
        if size < end:
            raise ModelCorrupt(
                f"{path}: cut short ({size} bytes, the index needs {end}); download the "
                "model again",
                path=path,
            )


def _table_entries(table: bytes) -> dict[bytes, bytes]:
    """Every key and value of an uncompressed sorted string table."""
    if len(table) < _FOOTER_BYTES:
        raise ValueError(f"{len(table)} bytes, shorter than a table footer")
    footer = table[-_FOOTER_BYTES:]
    (magic,) = struct.unpack("<Q", footer[-8:])
    if magic != TABLE_MAGIC:
        raise ValueError(f"table magic {magic:#x}, expected {TABLE_MAGIC:#x}")
    _, at = _varint(footer, 0)  # the metaindex block: empty in checkpoints
    _, at = _varint(footer, at)
    index_offset, at = _varint(footer, at)
    index_size, _ = _varint(footer, at)
    pairs: dict[bytes, bytes] = {}
    for _, handle in _block_entries(_block(table, index_offset, index_size)):
        offset, at = _varint(handle, 0)
        size, _ = _varint(handle, at)
        pairs.update(_block_entries(_block(table, offset, size)))
    return pairs


def _block(table: bytes, offset: int, size: int) -> bytes:
    """One block's contents; its 5-byte trailer (compression type, CRC) follows it."""
    if offset + size + 5 > len(table):
        raise ValueError(f"block at {offset} of {size} bytes runs past the end")
    compression = table[offset + size]
    if compression != 0:
        raise ValueError(f"compressed block (type {compression}); TensorFlow writes none")
    return table[offset : offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """The entries of one block: prefix-compressed keys, up to the restart array."""
    (restarts,) = struct.unpack("<I", block[-4:])
    end = len(block) - 4 - 4 * restarts
    if end < 0:
        raise ValueError(f"block of {len(block)} bytes cannot hold {restarts} restarts")
    entries: list[tuple[bytes, bytes]] = []
    key = b""
    at = 0
    while at < end:
        shared, at = _varint(block, at)
        unshared, at = _varint(block, at)
        length, at = _varint(block, at)
        key = key[:shared] + block[at : at + unshared]
        at += unshared
        entries.append((key, block[at : at + length]))
        at += length
    if at != end:
        raise ValueError("a block entry runs past its block")
    return entries


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """A base-128 varint at ``at``; returns it and the position after it."""
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _fields(message: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message's fields in order: ``(number, int or bytes)``."""
    fields: list[tuple[int, int | bytes]] = []
    at = 0
    while at < len(message):
        tag, at = _varint(message, at)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, at = _varint(message, at)
        elif wire == 1:
            (value,) = struct.unpack_from("<Q", message, at)
            at += 8
        elif wire == 2:
            length, at = _varint(message, at)
            value = message[at : at + length]
            if len(value) != length:
                raise ValueError("truncated field")
            at += length
        elif wire == 5:
            (value,) = struct.unpack_from("<I", message, at)
            at += 4
        else:
            raise ValueError(f"wire type {wire} of field {number}")
        fields.append((number, value))
    return fields


def _header(message: bytes) -> int:
    """``BundleHeaderProto``: the shard count (little-endian data only)."""
    shards, endianness = 1, 0
    for number, value in _fields(message):
        if number == 1 and isinstance(value, int):
            shards = value
        elif number == 2 and isinstance(value, int):
            endianness = value
    if endianness != 0:
        raise ValueError("big-endian tensors")
    return shards


def _entry(message: bytes) -> TensorEntry:
    """``BundleEntryProto``: dtype 1, shape 2, shard_id 3, offset 4, size 5, slices 7."""
    dtype = shard = offset = size = 0
    shape: tuple[int, ...] = ()
    for number, value in _fields(message):
        if number == 1 and isinstance(value, int):
            dtype = value
        elif number == 2 and isinstance(value, bytes):
            shape = _shape(value)
        elif number == 3 and isinstance(value, int):
            shard = value
        elif number == 4 and isinstance(value, int):
            offset = value
        elif number == 5 and isinstance(value, int):
            size = value
        elif number == 7:
            raise ValueError("a sliced (partitioned) variable")
    if dtype not in _DTYPES:
        raise ValueError(f"tensor dtype {dtype} (only numeric tensors are read)")
    return TensorEntry(_DTYPES[dtype], shape, shard, offset, size)


def _shape(message: bytes) -> tuple[int, ...]:
    """``TensorShapeProto``: each ``dim`` (field 2) and its ``size`` (field 1)."""
    dims: list[int] = []
    for number, value in _fields(message):
        if number == 2 and isinstance(value, bytes):
            size = next((v for n, v in _fields(value) if n == 1 and isinstance(v, int)), 0)
            dims.append(size)
        elif number == 3 and value:
            raise ValueError("a tensor of unknown rank")
    return tuple(dims)
