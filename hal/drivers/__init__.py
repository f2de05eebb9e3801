"""HAL drivers: the interface (base), the registry chosen by `[hal] driver`, and the simulation.

Fieldbus drivers (EtherCAT, CAN) plug in behind the same interface.
"""
