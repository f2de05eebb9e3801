"""The cycle kernels' compiled code, in one place: an ahead-of-time extension that `make kernels` builds
(loaded in about a millisecond, without importing numba), else numba's JIT with its on-disk cache.

A kernel module marks its functions with `@kernel(...)` (numba.njit's options) and declares a
`KernelSet`: the exported kernels with their signatures (`Sig`, plain numpy terms, so that nothing
here needs numba to check an argument) and the source files the machine code depends on.
`KernelSet.load()` gives the callables before READY:

- "aot": `python -m <kernel package>` (make kernels) builds `<aot_module>` with numba.pycc, stamped
  with a hash of those sources; it is used only while the stamp matches (an edited kernel or a
  changed segment layout makes it stale, and the JIT is used with a warning naming the file).
- "jit": numba.njit(cache=True), compiled or loaded from numba's cache, compilation disabled after.
$EVO_KERNELS = auto (default: aot when fresh, else jit) | aot (refuse to start without a fresh
module) | jit.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ENV_BACKEND = "EVO_KERNELS"
BACKENDS = ("auto", "aot", "jit")
ROOT = Path(__file__).resolve().parent.parent  # the source tree: sources are named relative to it
_MARK = "__evo_kernel__"
_MARK_INTRINSIC = "__evo_kernel_intrinsic__"
BUILD_VERSION = 1  # part of every stamp: raise it when build_aot changes what it makes
_INT_DTYPES = ("int64", "uint64", "uint32", "uint8")


class KernelLoadError(RuntimeError):
    """$EVO_KERNELS names no backend, or asks for "aot" when the module is absent or stale."""


def kernel(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a kernel or a helper: compiled with numba.njit(**options) when the JIT is used, or into the
    AOT module; the function itself stays plain Python until then (importing its module costs no numba)."""
    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, _MARK, dict(options))
        return func
    return mark


def kernel_intrinsic(func: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a numba intrinsic (`func(typingctx, *arg_types) -> (signature, codegen)`, numba.extending.
    intrinsic's form) for kernels to call: made an intrinsic when a kernel set is compiled; until then
    the plain function (importing its module costs no numba)."""
    setattr(func, _MARK_INTRINSIC, True)
    return func


@dataclass(frozen=True)
class Arg:
    """One argument of a kernel: a scalar (ndim 0) or an array of `dtype`, "C" contiguous or "A" any
    strides; `readonly`: the kernel only reads it (a read-only array is accepted, else it must be writable)."""

    dtype: str
    ndim: int = 1
    layout: str = "C"
    readonly: bool = False

    def numba_type(self) -> Any:
        from numba import types as nt

        base = nt.boolean if self.dtype == "bool" else getattr(nt, self.dtype)
        return base if self.ndim == 0 else nt.Array(base, self.ndim, self.layout, readonly=self.readonly)

    def refusal(self, value: Any) -> str | None:
        """Why `value` cannot be passed for this argument (None when it can): the same rule as numba's
        typeof against the one compiled signature — no conversion that numba would refuse."""
        if self.ndim == 0:
            if self.dtype == "bool":
                ok = isinstance(value, (bool, np.bool_))
            elif self.dtype in _INT_DTYPES:  # a Python int is an int64 to numba, a numpy integer its own dtype
                ok = (self.dtype == "int64" and isinstance(value, int) and not isinstance(value, bool)) or (
                    isinstance(value, np.integer) and value.dtype == np.dtype(self.dtype))
            else:
                ok = isinstance(value, (float, np.float64))
            return None if ok else f"{type(value).__name__} {value} where {self.dtype} is compiled"
        if not isinstance(value, np.ndarray):
            return f"{type(value).__name__} where an array of {self.dtype} is compiled"
        if value.dtype != np.dtype(self.dtype) or value.ndim != self.ndim:
            return f"array({value.dtype}, {value.ndim}d) where array({self.dtype}, {self.ndim}d) is compiled"
        if self.layout == "C" and not value.flags.c_contiguous:
            return f"a non-contiguous array({value.dtype}) where a C-contiguous one is compiled"
        if not self.readonly and not value.flags.writeable:
            return f"a read-only array({value.dtype}) where the kernel writes"
        return None

    def __str__(self) -> str:
        if self.ndim == 0:
            return self.dtype
        return f"array({self.dtype}, {self.ndim}d, {self.layout}{', readonly' if self.readonly else ''})"


@dataclass(frozen=True)
class Sig:
    """A kernel's one signature: the return type ("void", "int64", "bool", "float64") and its arguments."""

    ret: str
    args: tuple[Arg, ...]

    def numba(self) -> Any:
        from numba import types as nt

        ret = nt.void if self.ret == "void" else Arg(self.ret, 0).numba_type()
        return ret(*(a.numba_type() for a in self.args))

    @functools.cached_property
    def _fits(self) -> Callable[[tuple[Any, ...]], bool]:
        """`values` fit (generated straight-line tests, ~0.2 us per array); False may still fit (check
        then asks `refusal`, the rule itself)."""
        lines = ["def fits(v):", f"    if len(v) != {len(self.args)}: return False"]
        ns: dict[str, Any] = {"nd": np.ndarray, "int": int, "float": float, "bool": bool}
        for i, a in enumerate(self.args):
            if a.ndim == 0:
                ns[f"S{i}"] = np.bool_ if a.dtype == "bool" else getattr(np, a.dtype)
                py = {"bool": "bool", "int64": "int", "float64": "float"}.get(a.dtype)
                alt = f"type(v[{i}]) is not {py} and " if py else ""
                lines.append(f"    if {alt}type(v[{i}]) is not S{i}: return False")
                continue
            ns[f"D{i}"] = np.dtype(a.dtype)
            lines += [f"    x = v[{i}]",
                      f"    if type(x) is not nd or x.ndim != {a.ndim} or (x.dtype is not D{i} and x.dtype != D{i}): "
                      f"return False"]
            flags = ([] if a.layout != "C" else ["not f.c_contiguous"]) + ([] if a.readonly else ["not f.writeable"])
            if flags:
                lines += ["    f = x.flags", f"    if {' or '.join(flags)}: return False"]
        lines.append("    return True")
        exec("\n".join(lines), ns)  # noqa: S102 - generated from our own signature
        return ns["fits"]

    def check(self, name: str, values: tuple[Any, ...]) -> None:
        """TypeError naming the kernel, the argument and both types unless `values` fit."""
        if self._fits(values):
            return
        if len(values) != len(self.args):
            raise TypeError(f"{name}: {len(values)} arguments, the compiled signature takes {len(self.args)}")
        for i, (a, v) in enumerate(zip(self.args, values)):
            why = a.refusal(v)
            if why:
                raise TypeError(f"{name}: argument {i} does not match the compiled signature: {why}")

    def __str__(self) -> str:
        return f"{self.ret}({', '.join(map(str, self.args))})"


@dataclass(frozen=True)
class Loaded:
    """The kernels of one set, ready to run: `checked(name)` checks every call (use it where the
    arguments change from call to call); `entry(name, *args)` checks `args` once and returns the bare
    compiled entry point (for cycle loops that pass the same arrays every time)."""

    backend: str  # "aot" or "jit"
    note: str  # why this backend: shown at start when it is not the one a machine should run
    load_s: float
    compiled: tuple[str, ...]  # jit: the kernels compiled now (not found in numba's cache)
    sigs: dict[str, Sig]
    raw: dict[str, Callable[..., Any]]  # aot functions / the jit overloads' entry points
    dispatchers: dict[str, Any] = field(default_factory=dict)  # jit only: numba's dispatchers

    def checked(self, name: str) -> Callable[..., Any]:
        if self.backend == "jit":
            return self.dispatchers[name]  # numba checks (compilation disabled: a TypeError)
        sig, fn = self.sigs[name], self.raw[name]

        def call(*args: Any) -> Any:
            sig.check(name, args)
            return fn(*args)

        call.__name__ = call.__qualname__ = name
        return call

    def entry(self, name: str, *args: Any) -> Callable[..., Any]:
        self.sigs[name].check(name, args)
        return self.raw[name]


@dataclass(frozen=True)
class KernelSet:
    """The exported kernels of one process kind and what their machine code depends on."""

    name: str  # "hal", "cu": names the set in messages
    aot_module: str  # dotted name of the built extension (git-ignored, next to the sources)
    modules: tuple[str, ...]  # the modules holding @kernel functions
    exports: dict[str, tuple[str, str, Sig]]  # name -> (module, function, signature)
    sources: tuple[str, ...]  # files (relative to the tree) the compiled code depends on

    def stamp(self) -> int:
        """A hash of the sources, the signatures, BUILD_VERSION and the interpreter/numpy versions (63 bits)."""
        h = hashlib.sha256(f"{self.name}|{BUILD_VERSION}|{sys.version}|{np.__version__}".encode())
        for rel in self.sources:
            h.update(rel.encode())
            h.update((ROOT / rel).read_bytes())
        for name, (mod, fn, sig) in sorted(self.exports.items()):
            h.update(f"{name}={mod}.{fn}:{sig}".encode())
        return int.from_bytes(h.digest()[:8], "little") >> 1

    def load(self, backend: str | None = None) -> Loaded:
        """The kernels for `backend` (else $EVO_KERNELS, else auto); once per process and backend."""
        backend = backend or os.environ.get(ENV_BACKEND) or "auto"
        if backend not in BACKENDS:
            raise KernelLoadError(f"${ENV_BACKEND}={backend!r}: unknown; known: {', '.join(BACKENDS)}")
        done = _LOADED.get((self.name, backend))
        if done is not None:
            return done
        t0 = time.perf_counter()
        note = f"${ENV_BACKEND}=jit"  # (replaced by why the AOT module is not used)
        loaded = None
        if backend != "jit":
            loaded, note = self._load_aot(t0)
            if loaded is None and backend == "aot":
                raise KernelLoadError(f"{self.name} kernels: {note} (${ENV_BACKEND}=aot)")
        if loaded is None:
            loaded = self._load_jit(t0, note)
            if backend == "auto":  # a machine should run the AOT module: say why it does not
                logging.getLogger(__name__).warning("%s kernels: %s; numba's JIT is used (%.2f s to load)",
                                                    self.name, note, loaded.load_s)
        _LOADED[(self.name, backend)] = loaded
        return loaded

    def aot(self) -> tuple[Any, str]:
        """The built module if it matches the sources (else None), and why not."""
        try:
            mod = importlib.import_module(self.aot_module)
        except (ImportError, OSError) as e:
            return None, f"no compiled module {self.aot_module} ({e}); `make kernels` builds it"
        try:
            want = self.stamp()
        except OSError as e:  # a source missing or unreadable: the module cannot be checked against it
            return None, f"cannot check {self.aot_module} against {e.filename} ({e.strerror})"
        if int(mod.aot_stamp()) != want:
            return None, (f"{self.aot_module} is stale (one of {', '.join(self.sources)} changed since it was "
                          f"built); `make kernels` rebuilds it")
        return mod, ""

    def _load_aot(self, t0: float) -> tuple[Loaded | None, str]:
        mod, why = self.aot()
        if mod is None:
            return None, why
        raw = {name: getattr(mod, name) for name in self.exports}
        sigs = {name: sig for name, (_m, _f, sig) in self.exports.items()}
        return Loaded("aot", f"{self.aot_module} (built ahead of time)", time.perf_counter() - t0, (), sigs, raw), ""

    def _load_jit(self, t0: float, note: str) -> Loaded:
        dispatchers = self.bind_jit()
        stamp = self._jit_cache_current()
        compiled, raw, sigs = [], {}, {}
        for name, (_mod, _fn, sig) in self.exports.items():
            d = dispatchers[name]
            nsig = sig.numba()
            misses = sum(d.stats.cache_misses.values())
            if tuple(nsig.args) not in d.overloads:
                d.compile(nsig.args)
            d.disable_compile()
            if sum(d.stats.cache_misses.values()) > misses:
                compiled.append(name)
            raw[name] = d.overloads[tuple(nsig.args)].entry_point
            sigs[name] = sig
        if stamp is not None:
            from common.files import write_atomic

            write_atomic(stamp[0], stamp[1], sync=False)
        return Loaded("jit", note, time.perf_counter() - t0, tuple(compiled), sigs, raw, dispatchers)

    def _jit_cache_current(self) -> tuple[Path, str] | None:
        """numba's cache checks a function against its own file only: a kernel compiled with a helper or a
        constant of another file (a segment layout, common/shm/seqlock_jit.py) would be loaded stale after
        that file changed. So the set's stamp is kept beside its cache; when it differs every function of
        the set is flushed from the cache (all recompile, ~40 s) — returns (record, stamp) to write once
        the exports are compiled, None when the record matches."""
        record = self.jit_cache_record()
        want = str(self.stamp())
        try:
            if record.read_text() == want:
                return None
        except OSError:
            pass
        for d in self._set_dispatchers():
            d._cache.flush()
        return record, want

    def jit_cache_record(self) -> Path:
        """Where the stamp of the code in numba's cache is kept: beside the first export's cache (after
        bind_jit)."""
        mod, fn, _sig = next(iter(self.exports.values()))
        return Path(getattr(importlib.import_module(mod), fn)._cache.cache_path) / f"evo-{self.name}-kernels.stamp"

    def _set_dispatchers(self) -> list[Any]:
        """The numba dispatchers of every @kernel function of the set's modules (after bind_jit)."""
        ours = {id(d) for d in _DISPATCHERS.values() if hasattr(d, "_cache")}  # (intrinsics have no cache)
        return [v for m in self.modules for v in vars(importlib.import_module(m)).values() if id(v) in ours]

    def bind_jit(self) -> dict[str, Any]:
        """Every @kernel function of the modules replaced, in its module, by its numba dispatcher (so the
        kernels call compiled helpers); the exported kernels' dispatchers by export name."""
        import numba
        from numba.extending import intrinsic

        for modname in self.modules:
            mod = importlib.import_module(modname)
            for attr, value in list(vars(mod).items()):
                if not isinstance(value, types.FunctionType):
                    continue
                if hasattr(value, _MARK):
                    make: Callable[[Any], Any] = numba.njit(**getattr(value, _MARK))
                elif hasattr(value, _MARK_INTRINSIC):
                    make = intrinsic
                else:
                    continue
                d = _DISPATCHERS.get(value)
                if d is None:
                    d = _DISPATCHERS[value] = make(value)
                setattr(mod, attr, d)
        return {name: getattr(importlib.import_module(mod), fn) for name, (mod, fn, _sig) in self.exports.items()}

    def build_aot(self) -> Path:
        """Compile every export into `aot_module` with numba.pycc (for this CPU), stamped; the file is
        written next to the sources by one rename (a running process keeps the one it loaded)."""
        import warnings

        from numba.core.errors import NumbaPendingDeprecationWarning

        from common.files import write_atomic

        dispatchers = self.bind_jit()
        stamp = self._jit_cache_current()  # (build_main loads the JIT first: the cache is current then)
        if stamp is not None:
            raise KernelLoadError(f"{self.name} kernels: numba's cache is not current; load the JIT first")
        pkg, _, base = self.aot_module.rpartition(".")
        target_dir = Path(importlib.import_module(pkg).__file__).parent
        with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="evo-aot-") as td:
            warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)  # pycc's, at import and compile
            from numba.pycc import CC

            cc = CC(base)
            cc.output_dir = td
            cc.target_cpu = "host"  # built where it runs (make setup on the machine)
            cc.verbose = False
            for name, (_mod, _fn, sig) in self.exports.items():
                cc.export(name, sig.numba())(_generated(name, len(sig.args), "_kernel", _kernel=dispatchers[name]))
            cc.export("aot_stamp", "int64()")(_generated("aot_stamp", 0, str(self.stamp())))
            cc.compile()
            built = next(Path(td).glob(f"{base}.*so"))
            target = target_dir / built.name
            write_atomic(target, built.read_bytes(), sync=False, mode=0o755)
        return target


def _generated(name: str, n_args: int, body: str, **names: Any) -> Callable[..., Any]:
    """`def name(a0, .., aN): return body(a0, .., aN)` (a call when `n_args`, else the expression) for
    pycc to export: a kernel's forwarder — pycc compiles the exported function with its own default
    flags, the kernel itself is compiled by its dispatcher with the kernel's options — or the stamp."""
    params = ", ".join(f"a{i}" for i in range(n_args))
    ns: dict[str, Any] = dict(names)
    exec(f"def {name}({params}):\n    return {body}{f'({params})' if n_args else ''}\n", ns)  # noqa: S102
    return ns[name]


_LOADED: dict[tuple[str, str], Loaded] = {}
_DISPATCHERS: dict[Callable[..., Any], Any] = {}


def build_main(kset: KernelSet, smoke: Callable[[Loaded], None], argv: list[str] | None = None) -> int:
    """`python -m <kernel package> [--if-stale | --check]`: fill numba's cache (the fallback), build the AOT
    module, run a few cycles on each (the new module in a fresh process: an extension module cannot be
    loaded twice into one). --if-stale: nothing when the module matches the sources; --check: load the
    module (refused unless fresh) and run the cycles."""
    import argparse
    import subprocess

    main_spec = getattr(sys.modules["__main__"], "__spec__", None)
    prog = main_spec.name.removesuffix(".__main__") if main_spec else kset.modules[0]
    parser = argparse.ArgumentParser(prog=f"python -m {prog}", description=f"build the {kset.name} cycle kernels")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--if-stale", action="store_true", help="do nothing when the built module is up to date")
    how.add_argument("--check", action="store_true", help="load the built module and run a few cycles on it")
    args = parser.parse_args(argv)
    if args.check:
        aot = kset.load("aot")
        smoke(aot)
        print(f"{kset.name} kernels: {kset.aot_module} loads in {aot.load_s * 1e3:.1f} ms and runs")
        return 0
    if args.if_stale:
        mod, why = kset.aot()
        if mod is not None:
            print(f"{kset.name} kernels: {kset.aot_module} is up to date")
            return 0
        print(f"{kset.name} kernels: {why}")
    t0 = time.perf_counter()
    jit = kset.load("jit")
    what = ", ".join(jit.compiled) if jit.compiled else "nothing (all from numba's cache)"
    print(f"{kset.name} kernels: numba JIT compiled {what} in {jit.load_s:.2f} s")
    smoke(jit)
    t1 = time.perf_counter()
    target = kset.build_aot()
    print(f"{kset.name} kernels: built {target.relative_to(ROOT)} in {time.perf_counter() - t1:.2f} s "
          f"({time.perf_counter() - t0:.2f} s in all)", flush=True)
    return subprocess.run([sys.executable, "-m", prog, "--check"], cwd=ROOT, check=False).returncode
