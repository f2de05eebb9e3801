"""Generated protobuf modules of the gRPC bridge (package evo.v1); regenerate with `make protos`."""
