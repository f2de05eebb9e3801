"""Small helpers every benchmark shares: latency summaries, machine info, tables, JSON results.

Usage: `summarize(ns)` -> dict, `print_table(rows, columns)`, `write_json("name", data)`,
`with temp_env(EVO_KERNELS="jit"): ...`.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@contextlib.contextmanager
def temp_env(**values: str | None):  # noqa: ANN201
    """os.environ with `values` set (None: unset) inside the block, as it was afterwards."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def summarize(samples_ns: Sequence[int] | np.ndarray) -> dict[str, float]:
    """p50/p99/p99.9, mean, min, max (all in ns) and the sample count of one latency series."""
    a = np.asarray(samples_ns, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no samples")
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {
        "n": int(a.size),
        "p50_ns": float(p50),
        "p99_ns": float(p99),
        "p999_ns": float(p999),
        "mean_ns": float(a.mean()),
        "min_ns": float(a.min()),
        "max_ns": float(a.max()),
    }


def ratio(value: float, base: float) -> float | None:
    """value / base, or None when there is no meaningful base."""
    return value / base if base else None


def timer_overhead_ns(n: int = 20_000) -> np.ndarray:
    """Cost of an empty `perf_counter_ns()` pair, measured the way the benchmarks time an op."""
    pc = time.perf_counter_ns
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        t0 = pc()
        t1 = pc()
        out[i] = t1 - t0
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: platform, CPU model, cores, Python and numpy versions, load."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_impl": platform.python_implementation(),
        "numpy": np.__version__,
        "loadavg_at_start": load,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _fmt(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)


def format_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table. `columns` = (header, row key, format spec such as ".0f" or ".2f"; "" = str).
    Text columns are left-aligned, numbers right-aligned; None prints as '-'."""
    rows = list(rows)
    cells = [[_fmt(r.get(key), spec) for _, key, spec in columns] for r in rows]
    numeric = [all(isinstance(r.get(key), (int, float)) or r.get(key) is None for r in rows) for _, key, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line([h for h, _, _ in columns]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def print_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    print(format_table(rows, columns), flush=True)


def write_json(name: str, data: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write `data` to `path` or to benchmarks/results/<name>.json; returns the path written."""
    target = Path(path) if path else RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(target)
    return target
