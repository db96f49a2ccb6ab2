"""Write a safetensors file one tensor at a time.

The format is an 8-byte little-endian header length, a JSON header giving each
tensor's dtype, shape and byte range, then the tensors' bytes back to back. The header
needs only shapes and dtypes, so it is written first and each tensor's bytes follow as
it arrives: a writer never holds more than the tensor in hand (the safetensors package
wants them all at once). The header is padded with spaces to a multiple of 8 bytes, as
the safetensors package pads it; `safetensors.torch.load_file` and transformers read
the result (tests/checkpoints/test_safetensors_stream.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import torch

DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

Spec = tuple[str, torch.dtype, tuple[int, ...]]  # (name, dtype, shape)


class StreamWriter:
    """`write` each tensor of `specs`, in that order, then `close`; a missing, extra or
    misshapen tensor is an error naming it."""

    def __init__(self, path: Path, specs: list[Spec], metadata: dict[str, str] | None = None):
        self.path, self.specs, self.next = Path(path), specs, 0
        header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
        offset = 0
        for name, dtype, shape in specs:
            size = torch.Size(shape).numel() * dtype.itemsize
            header[name] = {"dtype": DTYPES[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + size]}  # fmt: skip
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self.file: BinaryIO = open(self.path, "wb")
        self.file.write(struct.pack("<Q", len(text)) + text)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if self.next >= len(self.specs):
            raise ValueError(f"{self.path}: {name} is not in the header")
        want, dtype, shape = self.specs[self.next]
        if (name, tensor.dtype, tuple(tensor.shape)) != (want, dtype, tuple(shape)):
            got = f"{name} {tensor.dtype} {tuple(tensor.shape)}"
            raise ValueError(f"{self.path}: expected {want} {dtype} {tuple(shape)}, got {got}")
        data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
        self.file.write(memoryview(data.numpy()))
        self.next += 1

    def close(self) -> None:
        self.file.close()
        if self.next != len(self.specs):
            missing = [name for name, _, _ in self.specs[self.next :]]
            raise ValueError(f"{self.path}: never written: {missing[:5]}")
