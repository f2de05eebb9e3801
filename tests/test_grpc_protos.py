"""The bridge's protos: committed generated code up to date, enums mirror common.states, documented.

Also checks that our evo.v1 files and the watchdog's supervisor.proto share one pool without clashes.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from common import states
from common.shm.commands import ResultCode
from grpc_bridge import codegen
from grpc_bridge.protos.evo.v1 import io_pb2, machine_pb2, recipes_pb2, types_pb2

REPO = codegen.REPO

MIRRORS = [
    (types_pb2.MachineState, states.MachineState, "MACHINE_STATE_"),
    (types_pb2.SafetyState, states.SafetyState, "SAFETY_STATE_"),
    (types_pb2.PowerState, states.PowerState, "POWER_STATE_"),
    (types_pb2.MotionState, states.MotionState, "MOTION_STATE_"),
    (types_pb2.OperationalMode, states.OperationalMode, "OPERATIONAL_MODE_"),
    (types_pb2.CouplingState, states.CouplingState, "COUPLING_STATE_"),
    (types_pb2.GearboxState, states.GearboxState, "GEARBOX_STATE_"),
    (types_pb2.LoadingState, states.LoadingState, "LOADING_STATE_"),
    (types_pb2.SafeStopCategory, states.SafeStopCategory, "SAFE_STOP_CATEGORY_"),
    (types_pb2.CommandSource, states.CommandSource, "COMMAND_SOURCE_"),
    (types_pb2.ReState, states.ReState, "RE_STATE_"),
    (types_pb2.StepResult, states.StepResult, "STEP_RESULT_"),
    (types_pb2.DriverState, states.DriverState, "DRIVER_STATE_"),
    (types_pb2.ResultCode, ResultCode, "RESULT_CODE_"),
]


def test_committed_generated_code_matches_the_protos(tmp_path: Path) -> None:
    fresh = codegen.generate(tmp_path)
    committed = codegen.generated_files()
    assert [p.relative_to(tmp_path) for p in fresh] == [p.relative_to(REPO) for p in committed]
    stale = [str(c.relative_to(REPO)) for f, c in zip(fresh, committed) if not c.exists() or c.read_bytes() != f.read_bytes()]
    assert not stale, f"generated code out of date with the protos (run `make protos`): {stale}"
    gen_dir = REPO / codegen.PROTO_DIR
    orphans = sorted(
        p.name for p in gen_dir.iterdir()
        if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")) and p not in committed
    )
    assert not orphans, f"generated files without a .proto: {orphans}"


@pytest.mark.parametrize("proto_enum,py_enum,prefix", MIRRORS, ids=[m[1].__name__ for m in MIRRORS])
def test_proto_enums_mirror_common_states(proto_enum, py_enum, prefix) -> None:  # noqa: ANN001
    proto = {name: value for name, value in proto_enum.items()}
    expected = {prefix + m.name: int(m.value) for m in py_enum}
    assert proto == expected


def test_every_field_and_rpc_is_documented(tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", ".", "--include_source_info", f"--descriptor_set_out={out}",
         *map(str, codegen.proto_files())], cwd=REPO, check=True,
    )
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    missing = []
    for f in fds.file:
        comments = {tuple(loc.path): (loc.leading_comments + loc.trailing_comments).strip()
                    for loc in f.source_code_info.location}
        for mi, msg in enumerate(f.message_type):
            for fi, field in enumerate(msg.field):
                if not comments.get((4, mi, 2, fi)):
                    missing.append(f"{f.name}: {msg.name}.{field.name}")
        for si, svc in enumerate(f.service):
            for ri, rpc in enumerate(svc.method):
                if not comments.get((6, si, 2, ri)):
                    missing.append(f"{f.name}: rpc {svc.name}.{rpc.name}")
    assert not missing, "undocumented: " + ", ".join(missing)


def test_our_files_and_the_supervisor_share_one_pool() -> None:
    from common.protos.evo.v1 import supervisor_pb2

    names = {s.full_name for mod in (machine_pb2, io_pb2, recipes_pb2, supervisor_pb2)
             for s in mod.DESCRIPTOR.services_by_name.values()}
    assert names == {"evo.v1.Machine", "evo.v1.Io", "evo.v1.Recipes", "evo.v1.Supervisor"}
    assert machine_pb2.DESCRIPTOR.name == "grpc_bridge/protos/evo/v1/machine.proto"
