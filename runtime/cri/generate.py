"""Regenerate the `*_pb2.py` (+ `.pyi`) modules from their `.proto` files with grpcio-tools' protoc.

The generated module is committed, so a node needs only the protobuf runtime (no compiler at install time)
and the diff of a proto change is reviewed with it; `tests/cri/test_cri_proto.py` fails when it is stale.
Usage: python -m runtime.cri.generate [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTOS = ("cri_api.proto", "containerd_events.proto")


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency only

    out_dir.mkdir(parents=True, exist_ok=True)
    for proto in PROTOS:
        args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", str(HERE / proto)]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
