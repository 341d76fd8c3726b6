"""A small reader and writer of the safetensors format (numpy only, no extra dependency).

Layout: 8-byte little-endian unsigned header length ``n``; ``n`` bytes of JSON mapping each
tensor name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end
of the header; an optional ``"__metadata__"`` entry holds strings); then the raw little-endian
tensor bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..errors import WeightsError

_NUMPY_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}
_MAX_HEADER_BYTES = 100 * 2**20


def read_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every tensor of a safetensors file.

    ``BF16`` tensors are widened to float32 exactly (numpy has no bfloat16).

    Returns:
        ``(tensors, metadata)``: arrays by name (writable, in file order) and the
        ``__metadata__`` strings (empty if none).

    Raises:
        WeightsError: unreadable, truncated or malformed file (the message names the file).
    """
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise WeightsError(f"Cannot read weights file {path}: {exc}") from exc
    if data.size < 8:
        raise WeightsError(f"{path} is not a safetensors file (only {data.size} bytes).")
    (header_len,) = struct.unpack("<Q", data[:8].tobytes())
    if header_len > min(_MAX_HEADER_BYTES, data.size - 8):
        raise WeightsError(f"{path} is not a safetensors file or is truncated (bad header size).")
    try:
        header = json.loads(data[8 : 8 + header_len].tobytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"{path} is not a safetensors file (header is not JSON).") from exc
    if not isinstance(header, dict):
        raise WeightsError(f"{path} is not a safetensors file (header is not a JSON object).")
    metadata = header.pop("__metadata__", None) or {}
    body = data[8 + header_len :]
    tensors = {}
    for name, entry in header.items():
        tensors[name] = _tensor(path, name, entry, body)
    return tensors, metadata


def _tensor(path: Path, name: str, entry: dict, body: np.ndarray) -> np.ndarray:
    try:
        dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: malformed header entry for tensor {name!r}.") from exc
    if end > body.size or not 0 <= begin <= end:
        raise WeightsError(
            f"{path} is truncated: tensor {name!r} needs bytes {begin}..{end} of the data section, "
            f"which has {body.size}. Download the file again."
        )
    raw = body[begin:end]
    count = int(np.prod(shape, dtype=np.int64))
    if dtype == "BF16":
        if raw.size != 2 * count:
            raise WeightsError(f"{path}: tensor {name!r} has {raw.size} bytes for shape {shape}.")
        # bfloat16 is the upper half of a float32: shift into place, exact.
        wide = raw.view("<u2").astype(np.uint32) << 16
        return wide.view(np.float32).reshape(shape)
    if dtype not in _NUMPY_DTYPES:
        raise WeightsError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}.")
    item = np.dtype(_NUMPY_DTYPES[dtype])
    if raw.size != item.itemsize * count:
        raise WeightsError(f"{path}: tensor {name!r} has {raw.size} bytes for shape {shape}.")
    array = raw.view(item).reshape(shape).astype(item.newbyteorder("="), copy=False)
    # torch.from_numpy needs aligned memory; a tensor after an odd-sized float16 one is not.
    return np.require(array, requirements=["ALIGNED"])


def write_safetensors(
    path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    """Write arrays (float64/32/16, int64/32) as a safetensors file, in the given order."""
    names = {np.dtype(v).str.lstrip("<=|"): k for k, v in _NUMPY_DTYPES.items()}
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    chunks, offset = [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        key = array.dtype.newbyteorder("<").str.lstrip("<=|")
        if key not in names:
            raise ValueError(f"tensor {name!r}: dtype {array.dtype} cannot be written")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[key], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8-byte alignment
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in chunks:
            f.write(blob)
