"""Project-wide constants: array bounds, timing, protocol magic and config bounds.

One definition each; every other module imports from here.
"""
from __future__ import annotations

# --- array bounds (upstream evo_common::consts) ---------------------------------------------
MAX_AXES = 64
MAX_DI = 1024
MAX_DO = 1024
MAX_AI = 1024
MAX_AO = 1024
BANK_WORDS = MAX_DI // 64  # u64 words in a DI/DO bank (16)

# --- timing ----------------------------------------------------------------------------------
CYCLE_TIME_US = 1000  # 1 kHz
DEFAULT_STALE_READS = 3  # heartbeat unchanged for this many reads -> HeartbeatStale

# --- P2P shared-memory protocol ---------------------------------------------------------------
P2P_SHM_MAGIC = b"EVO_P2P\x00"
P2P_HEADER_SIZE = 64
P2P_PAYLOAD_ALIGN = 64
SHM_PAGE_SIZE = 4096
SHM_DIR = "/dev/shm"
SHM_MODE = 0o600
DEFAULT_SHM_PREFIX = "evo"
ENV_SHM_PREFIX = "EVO_SHM_PREFIX"
MAX_READ_RETRIES = 3

# --- paths -----------------------------------------------------------------------------------
DEFAULT_CONFIG_PATH = "/etc/evo"
DEFAULT_STATE_FILE = "/etc/evo/hal_state"
ENV_CONFIG_DIR = "EVO_CONFIG_DIR"
ENV_RUN_DIR = "EVO_RUN_DIR"
ENV_NOTIFY_FD = "EVO_NOTIFY_FD"
ENV_START_GATE_FD = "EVO_START_GATE_FD"  # preloaded module: wait here until the watchdog says go

# --- command rings ---------------------------------------------------------------------------
CMD_RING_SLOTS = 16  # commands in flight per command path
ACK_RING_SLOTS = 32  # acks kept per ack path (> CMD_RING_SLOTS so none is overwritten unread)
ACK_MESSAGE_LEN = 96  # bytes of UTF-8 reason text carried by an ack
NAME_LEN = 32  # fixed-size names (program / recipe / axis names) in segments

# === config bounds ============================================================================
# Numeric (min, max) bounds, inclusive, used by common/config to validate the TOML files at load
# time (upstream FR-054). One definition each; the loader names the file/section/field that
# breaks one. Units are those of the field (see the headers of the files in config/).
# --- config.toml [watchdog]
WD_MAX_RESTARTS_BOUNDS = (0, 1000)
WD_INITIAL_BACKOFF_MS_BOUNDS = (1, 60_000)
WD_MAX_BACKOFF_S_BOUNDS = (1, 3600)
WD_STABLE_RUN_S_BOUNDS = (1, 86_400)
WD_SIGTERM_TIMEOUT_S_BOUNDS = (0.1, 60.0)
WD_HAL_READY_TIMEOUT_S_BOUNDS = (0.1, 300.0)
WD_LIVENESS_TIMEOUT_S_BOUNDS = (0.1, 300.0)
# --- config.toml [hal] / [cu] / [re] (cycle loops)
CYCLE_TIME_US_BOUNDS = (100, 100_000)
RT_PRIORITY_BOUNDS = (0, 99)  # 0 = no SCHED_FIFO
CPU_AFFINITY_BOUNDS = (-1, 1023)  # -1 = no pinning
STALE_READS_BOUNDS = (1, 10_000)  # heartbeat reads / cycles before "stale"
STALE_CYCLES_BOUNDS = (0, 10_000)  # [hal] stale_reads / [cu] hal_stale_cycles; 0 = auto (common/stale.py)
ATTACH_TIMEOUT_S_BOUNDS = (0.1, 600.0)
ATTACH_INTERVAL_S_BOUNDS = (0.01, 60.0)
MANUAL_TIMEOUT_S_BOUNDS = (1.0, 86_400.0)
RE_TICK_MS_BOUNDS = (1, 1000)
# --- config.toml [mqtt] / [grpc]
NET_PORT_BOUNDS = (1, 65_535)
PUBLISH_RATE_HZ_BOUNDS = (0.1, 1000.0)
MQTT_KEEPALIVE_S_BOUNDS = (1, 3600)
COMMAND_TIMEOUT_S_BOUNDS = (0.01, 600.0)
# --- machine.toml
SAFETY_STOP_TIMEOUT_S_BOUNDS = (0.01, 600.0)
# --- axis_NN_*.toml
AXIS_ID_BOUNDS = (1, MAX_AXES)
AXIS_VELOCITY_BOUNDS = (0.0, 1e7)  # units/s (mm/s or deg/s)
AXIS_ACCELERATION_BOUNDS = (0.0, 1e9)  # units/s^2
AXIS_POSITION_BOUNDS = (-1e9, 1e9)  # units
AXIS_WINDOW_BOUNDS = (0.0, 1e6)  # in_position_window, lag_error_limit, max_sync_error
CTRL_GAIN_BOUNDS = (0.0, 1e6)  # kp, ki, kd, kvff, kaff, friction, jn, bn
CTRL_TIME_CONSTANT_S_BOUNDS = (0.0, 10.0)  # tf, tt
CTRL_FREQUENCY_BOUNDS = (0.0, 1e5)  # gdob (rad/s), f_notch, bw_notch, flp (Hz); 0 = stage off
TORQUE_PERCENT_BOUNDS = (0.0, 1e4)  # out_max, ss2_holding_torque, homing torque_limit
AXIS_TIMEOUT_S_BOUNDS = (0.0, 3600.0)  # sto_brake_delay, brake and homing timeouts
COUPLING_RATIO_BOUNDS = (-1e6, 1e6)
TAILSTOCK_FORCE_BOUNDS = (0.0, 1e9)
# --- io.toml
IO_DEBOUNCE_MS_BOUNDS = (0, 10_000)
IO_ENABLE_TIMEOUT_MS_BOUNDS = (0, 600_000)
IO_PULSE_MS_BOUNDS = (0, 600_000)
IO_AVERAGE_BOUNDS = (1, 1000)
IO_ANALOG_RANGE_BOUNDS = (-1e12, 1e12)  # ai/ao min, max, offset, init (engineering units)
IO_CURVE_COEFF_BOUNDS = (-1e6, 1e6)
