"""Regenerate `cri_api_pb2.py` (+ `.pyi`) from `cri_api.proto` with grpcio-tools' bundled protoc.

The generated module is committed, so a node needs only the protobuf runtime (no compiler at install time)
and the diff of a proto change is reviewed with it; `tests/cri/test_cri_proto.py` fails when it is stale.
Usage: python -m runtime.cri.generate [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "cri_api.proto"


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency only

    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", str(HERE / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
