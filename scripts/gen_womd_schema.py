"""Regenerate the embedded WOMD schema descriptor from ``smartpretrain/data/protos/womd_scenario.proto``.

    pip install grpcio-tools   # brings protoc; needed only here, never at run time
    python scripts/gen_womd_schema.py [--check]

Writes ``smartpretrain/data/protos/womd_scenario_descriptor.py``: the serialized ``FileDescriptorProto`` of the
.proto (no source info), which :mod:`smartpretrain.data.protos` loads into a private descriptor pool. Why not a
``*_pb2.py``: protoc's generated modules refuse protobuf runtimes older than the protoc that wrote them, and
they register ``waymo.open_dataset.*`` in the default pool, where they would collide with an installed
``waymo-open-dataset`` package. ``--check`` exits 1 when the committed module is out of date.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "smartpretrain" / "data" / "protos"
PROTO = PROTO_DIR / "womd_scenario.proto"
OUT = PROTO_DIR / "womd_scenario_descriptor.py"

HEADER = '''"""Serialized descriptor of ``womd_scenario.proto``; made by scripts/gen_womd_schema.py; do not edit."""

# fmt: off
SERIALIZED = (
'''


def compile_descriptor() -> bytes:
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("gen_womd_schema.py needs protoc: pip install grpcio-tools") from None
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", PROTO.name])
        if rc != 0:
            raise SystemExit(f"protoc failed on {PROTO} (exit {rc})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    if len(files) != 1:
        raise SystemExit(f"expected one file in the descriptor set, got {len(files)}")
    return files[0].SerializeToString(deterministic=True)


def render(serialized: bytes) -> str:
    lines = [f"    {serialized[i : i + 80]!r}" for i in range(0, len(serialized), 80)]
    return HEADER + "\n".join(lines) + "\n)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed module, write nothing")
    args = parser.parse_args()
    text = render(compile_descriptor())
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python scripts/gen_womd_schema.py", file=sys.stderr)
            raise SystemExit(1)
        print(f"{OUT} is up to date")
        return
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
