"""An emulated EtherCAT segment (CiA 402 drives, 8-channel DI/DO terminals) answering real frames on a raw socket.

Run it as its own process: `python -m hal.drivers.ethercat_emulator --interface IFACE --devices drive,drive,io8`.

Control channel (`--control PATH`, a Unix stream socket, one JSON object per line, one JSON reply per line,
`{"ok": true, ...}` or `{"ok": false, "error": "..."}`); positions are 1-based in bus order:

    {"cmd": "status"}                                   -> {"devices": [{position, type, station, al_state,
                                                            al_error, al_code, statusword, position, ...}], ...}
    {"cmd": "set_di", "position": 3, "value": 5}        DI channels of a terminal (bitmask, channel 1 = bit 0)
    {"cmd": "fault", "position": 1, "code": 29445}      drive fault, 0x603F error code (latched until fault reset)
    {"cmd": "leave_op", "position": 1, "code": 27}      SubDevice falls to SAFE-OP + error, AL status code
    {"cmd": "drop", "position": 2}                      line cut before position 2: it and all behind stop answering
    {"cmd": "silent", "on": true}                       no frame answered at all
    {"cmd": "restore", "power_cycle": true}             everything answers again (dropped ones power-cycled to INIT)

`hal.drivers.ethercat_emulator.control.EmulatorControl` is a small client for it.
"""
