"""Generates the Python modules of grpc_bridge/protos/evo/v1/*.proto with grpcio-tools.

`python -m grpc_bridge.codegen [OUT_DIR]` (what `make protos` runs); the repo root is the include path.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_DIR = Path("grpc_bridge/protos/evo/v1")  # relative to REPO: module paths stay package-qualified


def proto_files() -> list[Path]:
    """The bridge's .proto files, relative to the repo root, sorted."""
    return sorted(p.relative_to(REPO) for p in (REPO / PROTO_DIR).glob("*.proto"))


def generated_files(out_dir: Path = REPO) -> list[Path]:
    """Every file protoc writes for our protos (`_pb2.py`, `_pb2.pyi`, `_pb2_grpc.py`)."""
    out = []
    for proto in proto_files():
        stem = out_dir / proto.with_suffix("")
        out += [Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")]
    return out


def generate(out_dir: Path = REPO) -> list[Path]:
    """Run protoc for every proto into `out_dir` (the repo root by default); returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc", "-I", ".",
        f"--python_out={out_dir}", f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}",
        *[str(p) for p in proto_files()],
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"protoc failed ({res.returncode}): {res.stderr.strip()}")
    return generated_files(out_dir)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grpc_bridge.codegen", description=__doc__)
    ap.add_argument("out_dir", nargs="?", default=str(REPO), help="output root (default: the repo)")
    args = ap.parse_args(argv)
    for f in generate(Path(args.out_dir)):
        print(f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
