"""Generated protobuf/gRPC code for evo APIs (see the .proto files beside it).

Regenerate: python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. --pyi_out=. <proto>.
"""
