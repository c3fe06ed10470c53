"""Regenerate the embedded WOMD schema descriptors from the ``.proto`` files in ``smartpretrain/data/protos/``.

    pip install grpcio-tools   # brings protoc; needed only here, never at run time
    python scripts/gen_womd_schema.py [--check]

For each schema, writes the serialized ``FileDescriptorProto`` of the .proto (no source info) as a Python module,
which :mod:`smartpretrain.data.protos` loads into a private descriptor pool:

* ``womd_scenario.proto`` -> ``womd_scenario_descriptor.py`` (the dataset's ``Scenario``, read by the converter);
* ``womd_submission.proto`` -> ``womd_submission_descriptor.py`` (the challenge's ``MotionChallengeSubmission``,
  written by :mod:`smartpretrain.io.womd_submission`).

Why not a ``*_pb2.py``: protoc's generated modules refuse protobuf runtimes older than the protoc that wrote them,
and they register ``waymo.open_dataset.*`` in the default pool, where they would collide with an installed
``waymo-open-dataset`` package. ``--check`` exits 1 when a committed module is out of date.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROTO_DIR = REPO / "smartpretrain" / "data" / "protos"
#: (.proto, generated module, extra header lines): the submission module is new and carries its own E501
#: exemption (the scenario module's is in pyproject.toml; its text must stay byte-identical for ``--check``)
SCHEMAS: tuple[tuple[str, str, str], ...] = (
    ("womd_scenario.proto", "womd_scenario_descriptor.py", ""),
    ("womd_submission.proto", "womd_submission_descriptor.py", "# ruff: noqa: E501\n"),
)

HEADER = '''"""Serialized descriptor of ``{proto}``; made by scripts/gen_womd_schema.py; do not edit."""

{extra}# fmt: off
SERIALIZED = (
'''


def compile_descriptor(proto: Path) -> bytes:
    """The serialized ``FileDescriptorProto`` of one .proto of ``PROTO_DIR`` (deterministic bytes)."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit("gen_womd_schema.py needs protoc: pip install grpcio-tools") from None
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", proto.name])
        if rc != 0:
            raise SystemExit(f"protoc failed on {proto} (exit {rc})")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    if len(files) != 1:
        raise SystemExit(f"expected one file in the descriptor set, got {len(files)}")
    return files[0].SerializeToString(deterministic=True)


def render(serialized: bytes, proto: str = "womd_scenario.proto", extra: str = "") -> str:
    """The module text: the header, then the bytes as 80-byte literals."""
    lines = [f"    {serialized[i : i + 80]!r}" for i in range(0, len(serialized), 80)]
    return HEADER.format(proto=proto, extra=extra) + "\n".join(lines) + "\n)\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed modules, write nothing")
    args = parser.parse_args()
    stale = []
    for proto, module, extra in SCHEMAS:
        out = PROTO_DIR / module
        text = render(compile_descriptor(PROTO_DIR / proto), proto, extra)
        if args.check:
            if not out.exists() or out.read_text() != text:
                stale.append(out)
            else:
                print(f"{out} is up to date")
            continue
        if out.exists() and out.read_text() == text:
            print(f"{out} is up to date")
            continue
        out.write_text(text)
        print(f"wrote {out} ({len(text)} bytes)")
    for out in stale:
        print(f"{out} is out of date: run python scripts/gen_womd_schema.py", file=sys.stderr)
    if stale:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
