"""Emulated CANopen nodes of ours (CiA 402 drive, CiA 401 I/O node) speaking the real protocol on a python-can bus.

`python -m hal.drivers.canopen_emulator --interface udp_multicast --channel 239.74.163.2 --nodes 2:drive,10:io`.
"""
