"""commbus.proto is the contract: shipped in the package, and the committed generated
module is exactly what grpcio-tools makes of it."""

from __future__ import annotations

import shutil
from pathlib import Path

from jeeves_control_tower.ipc.adapters import grpc as package
from jeeves_control_tower.ipc.adapters.grpc import PROTO
from jeeves_control_tower.ipc.adapters.grpc import commbus_pb2 as pb

SRC = Path(package.__file__).resolve().parents[4]  # the directory holding jeeves_control_tower
RELATIVE = PROTO.resolve().relative_to(SRC)


def test_the_proto_is_inside_the_package() -> None:
    text = PROTO.read_text()
    assert "package jeeves.commbus.v1;" in text
    assert "service CommBus" in text
    assert pb.DESCRIPTOR.package == "jeeves.commbus.v1"
    assert pb.DESCRIPTOR.name == str(RELATIVE)


def test_the_committed_modules_match_the_proto(tmp_path: Path) -> None:
    from grpc_tools import protoc

    copy = tmp_path / RELATIVE
    copy.parent.mkdir(parents=True)
    shutil.copy(PROTO, copy)
    status = protoc.main(
        ["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", str(copy)]
    )
    assert status == 0
    for suffix in (".py", ".pyi"):
        generated = copy.with_name("commbus_pb2" + suffix).read_text()
        committed = PROTO.with_name("commbus_pb2" + suffix).read_text()
        assert generated == committed, (
            f"commbus_pb2{suffix} is stale: regenerate it with "
            f"python -m grpc_tools.protoc -I src --python_out=src --pyi_out=src {RELATIVE}"
        )
