"""Python stubs for a .proto, made with grpcio-tools as a test starts (shared by the gRPC test
clients)."""

import os
import sys

from grpc_tools import protoc


def generate(proto_root, proto, stub_dir):
    """Compile PROTO_ROOT/PROTO into STUB_DIR and put STUB_DIR on the import path."""
    os.makedirs(stub_dir, exist_ok=True)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={stub_dir}",
            f"--grpc_python_out={stub_dir}",
            os.path.join(proto_root, proto),
        ]
    )
    if rc != 0:
        sys.exit(f"protoc failed on {proto}: {rc}")
    sys.path.insert(0, stub_dir)
