"""Regenerate the example gRPC code from protos/*.proto: ``make protos`` runs this.

The generated modules are committed (src/microcall/examples_pb/), so using
them needs neither grpcio-tools nor a network: the demo and the examples run
from an installed package, and CI checks the code that was reviewed. The
price is regenerating after editing a .proto, which this script does:

1. ``grpc_tools.protoc`` writes the messages (``*_pb2.py``), the stubs and
   servicers (``*_pb2_grpc.py``), and with mypy-protobuf's plugins their
   type stubs (``.pyi``), so mypy --strict checks code that uses them;
2. ruff fixes and formats the output to the project's style, so
   ``make test``'s lint passes on generated code too.

The import path is mapped (``-Imicrocall/examples_pb=protos``) so that the
generated ``*_pb2_grpc.py`` imports its messages as
``microcall.examples_pb.*_pb2``, a path that works from an installed package.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "microcall/examples_pb"
OUTPUT = ROOT / "src"


def main() -> int:
    bin_dir = Path(sys.executable).parent
    sources = sorted(path.name for path in PROTOS.glob("*.proto"))
    plugins = [
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
    ]
    outputs = [
        f"--python_out={OUTPUT}",
        f"--grpc_python_out={OUTPUT}",
        f"--mypy_out={OUTPUT}",
        f"--mypy_grpc_out={OUTPUT}",
    ]
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PACKAGE}={PROTOS}"]
    subprocess.run(
        [*protoc, *plugins, *outputs, *(f"{PROTOS / name}" for name in sources)],
        check=True,
        cwd=ROOT,
    )
    generated = OUTPUT / PACKAGE
    ruff = str(bin_dir / "ruff")
    # The generated code's style is protoc's; the unsafe fixes only drop
    # version checks for Pythons older than the project supports.
    subprocess.run(
        [ruff, "check", "--fix", "--unsafe-fixes", "--quiet", str(generated)], check=True
    )
    subprocess.run([ruff, "format", "--quiet", str(generated)], check=True)
    print(f"generated {', '.join(sources)} into {generated.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
