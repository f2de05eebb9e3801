"""CANopen HAL driver (python-can + canopen): CiA 402 drives per axis, CiA 401 I/O nodes, set up from canopen.toml.

`CanopenDriver` is chosen by `[hal] driver = "canopen"`; the network file is common/fieldbus/canopen_config.py's.
"""
from .driver import CanopenDriver

__all__ = ["CanopenDriver"]
