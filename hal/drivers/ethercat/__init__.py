"""The EtherCAT HAL driver (`[hal] driver = "ethercat"`): pysoem/SOEM MainDevice, CiA 402 drives, DI/DO/AI/AO terminals.

The network (SubDevices, ESI files, axis and pin blocks) is `common.fieldbus.ethercat_config`; see EthercatDriver.
"""
from .driver import EthercatDriver

__all__ = ["EthercatDriver"]
