"""The operator HMI: a web page and an HTTP/JSON face of the operator API, served by the gRPC bridge.

Same event loop, same method table, same auth and fan-out as gRPC (see grpc_bridge/hmi/README in the
bridge's README.md).
"""
from .server import HMI_SERVICE, HmiServer

__all__ = ["HMI_SERVICE", "HmiServer"]
