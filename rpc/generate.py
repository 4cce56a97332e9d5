"""Regenerate the Python modules of rpc/worldstate.proto (committed beside it).

    .venv/bin/python -m rpc.generate

Run from the repository root after changing the proto; it needs grpcio-tools (the dev
extras). The generated modules are committed so a node needs no compiler, only
grpcio and protobuf: tests/test_grpc.py checks that they match the proto.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = "rpc/worldstate.proto"
OUTPUTS = ("rpc/worldstate_pb2.py", "rpc/worldstate_pb2.pyi", "rpc/worldstate_pb2_grpc.py")


def generate(out_dir: Path = ROOT) -> None:
    """Compile the proto into `out_dir` (the repository root: the modules land in rpc/)."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{ROOT}", f"-I{well_known}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", str(ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
