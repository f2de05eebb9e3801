"""common/jit.py: kernel signatures checked in numpy terms, the AOT module's staleness, the fallback to
numba's JIT with a warning, a refused $EVO_KERNELS, and the source list each kernel set is stamped with.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.jit import Arg, KernelLoadError, Sig
from control_unit import kernels as cu_kernels
from hal import kernels as hal_kernels
from tests.helpers import remove_shm, shm_entries, unique_prefix

ROOT = Path(__file__).resolve().parents[1]
SETS = {"hal": hal_kernels.KERNELS, "cu": cu_kernels.KERNELS}


def test_a_signature_refuses_what_numba_would_not_accept():
    sig = Sig("int64", (Arg("uint8"), Arg("float64", 1, "A", readonly=True), Arg("int64", 0), Arg("float64", 0),
                        Arg("bool", 0)))
    good = (np.zeros(8, np.uint8), np.zeros(8)[::2], 3, 0.5, True)
    sig.check("k", good)
    sig.check("k", (good[0], np.zeros(3), np.int64(3), np.float64(1.0), np.bool_(False)))
    ro = np.zeros(4)
    ro.flags.writeable = False
    sig.check("k", (good[0], ro, 3, 0.5, True))  # a read-only array where the kernel only reads
    rec = np.zeros(4, dtype=[("p", "<f8"), ("q", "<i8")])
    sig.check("k", (good[0], rec["p"], 3, 0.5, True))  # a strided field view ("A" layout)
    cases = [
        ((np.zeros(8, np.int8),) + good[1:], r"argument 0 .*array\(int8, 1d\) where array\(uint8, 1d\)"),
        ((np.zeros(16, np.uint8)[::2],) + good[1:], "argument 0 .*non-contiguous"),
        ((np.zeros((2, 4), np.uint8),) + good[1:], r"argument 0 .*2d\) where"),
        ((np.frombuffer(bytes(8), np.uint8),) + good[1:], "argument 0 .*read-only array.*kernel writes"),
        (good[:2] + (3.0,) + good[3:], "argument 2 .*float 3.0 where int64"),
        (good[:2] + (True,) + good[3:], "argument 2 .*bool True where int64"),
        (good[:2] + (np.int32(3),) + good[3:], "argument 2 .*int32 3 where int64"),
        (good[:3] + (1,) + good[4:], "argument 3 .*int 1 where float64"),
        (good[:4] + (1,), "argument 4 .*int 1 where bool"),
        ((list(range(8)),) + good[1:], "argument 0 .*list where an array of uint8"),
        (good[:4], "4 arguments, the compiled signature takes 5"),
    ]
    for values, msg in cases:
        with pytest.raises(TypeError, match=f"^k: {msg}"):
            sig.check("k", values)


@pytest.mark.parametrize("name", ["hal", "cu"])
def test_make_kernels_built_a_fresh_module(name):
    """The suite runs after `make setup` (make kernels): the AOT module matches the sources."""
    mod, why = SETS[name].aot()
    assert mod is not None, why
    assert int(mod.aot_stamp()) == SETS[name].stamp()


def test_a_changed_source_makes_the_module_stale_and_the_jit_takes_over(caplog, request):
    """A kernel set whose sources no longer match what the module was built from: "aot" is refused with
    the reason, "auto" uses numba's JIT (from its cache) and says why in a warning."""
    stale = dataclasses.replace(hal_kernels.KERNELS, name="hal-stale-probe",
                                sources=hal_kernels.KERNELS.sources + ("README.md",))
    assert stale.stamp() != hal_kernels.KERNELS.stamp()
    # numba's cache holds this set's code already (as after a HAL that started on the JIT after the edit,
    # `make kernels` not run): its record says so, and "auto" loads it from there
    stale.bind_jit()
    record = stale.jit_cache_record()
    record.write_text(str(stale.stamp()))
    request.addfinalizer(lambda: record.unlink(missing_ok=True))
    with pytest.raises(KernelLoadError, match=r"hal-stale-probe kernels: hal\._kernels_aot is stale .*README\.md.*"
                                              r"make kernels.*\$EVO_KERNELS=aot"):
        stale.load("aot")
    with caplog.at_level(logging.WARNING, logger="common.jit"):
        loaded = stale.load("auto")
    assert loaded.backend == "jit" and loaded.compiled == ()
    assert any("hal-stale-probe kernels: hal._kernels_aot is stale" in r.getMessage() and "JIT is used" in
               r.getMessage() for r in caplog.records), caplog.text
    assert hal_kernels.load("aot").backend == "aot"  # the fresh set is not affected
    gone = dataclasses.replace(stale, sources=stale.sources + ("hal/no_such_kernel.py",))
    mod, why = gone.aot()
    assert mod is None and "cannot check hal._kernels_aot against" in why and "no_such_kernel.py" in why
    with pytest.raises(KernelLoadError, match=r"\$EVO_KERNELS='fast': unknown; known: auto, aot, jit"):
        stale.load("fast")


PROBE_A = """
from common.jit import Arg, KernelSet, Sig, kernel
from kprobe.b import helper

@kernel(cache=True)
def f(x):
    return helper(x)

KERNELS = KernelSet("kprobe", "kprobe._aot", ("kprobe.a", "kprobe.b"),
                    {{"f": ("kprobe.a", "f", Sig("int64", (Arg("int64", 0),)))}}, ({a!r}, {b!r}))
"""
PROBE_B = """
from common.jit import kernel

@kernel(cache=True)
def helper(x):
    return x + {step}
"""
PROBE_RUN = "from kprobe.a import KERNELS; k = KERNELS.load('jit'); print(k.raw['f'](1), len(k.compiled))"


def test_a_helper_changed_in_another_file_is_never_run_stale_from_numbas_cache(tmp_path):
    """numba checks a cached function against its own file only: a kernel calling a helper of another
    file (common/shm/seqlock_jit.py's commit in hal_step) kept the old helper's code after that file
    changed. The set's stamp is kept beside its cache; a process whose sources differ from the record
    flushes the set's cache and compiles. Here a two-file set in fresh processes: f(1) = helper(1)."""
    pkg = tmp_path / "kprobe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    a, b = pkg / "a.py", pkg / "b.py"
    a.write_text(PROBE_A.format(a=str(a), b=str(b)))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", NUMBA_CACHE_DIR=str(tmp_path / "cache"))

    def run() -> list[str]:
        r = subprocess.run([sys.executable, "-c", PROBE_RUN], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    b.write_text(PROBE_B.format(step=1))
    assert run() == ["2", "1"]  # compiled
    assert run() == ["2", "0"]  # from the cache
    b.write_text(PROBE_B.format(step=2) + "# a longer file\n")
    assert run() == ["3", "1"]  # the helper's file changed: compiled again, not f's old machine code


@pytest.mark.parametrize("name", ["hal", "cu"])
def test_every_source_the_kernels_import_is_stamped(name):
    """The stamp covers every project module a kernel module imports (their constants are baked into the
    machine code): a new import without a new entry here would leave a stale module undetected. (common/jit.py
    itself, the builder, is covered by its BUILD_VERSION.)"""
    ks = SETS[name]
    probe = ("import sys\n"
             f"for m in {list(ks.modules)!r}: __import__(m)\n"
             "import common.jit\n"
             "for m in list(sys.modules.values()):\n"
             "    f = getattr(m, '__file__', None) or ''\n"
             "    if m.__name__.split('.')[0] in ('common', 'hal', 'control_unit') and not f.endswith('__init__.py'):\n"
             "        print(m.__name__)\n")
    r = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    imported = {m.replace(".", "/") + ".py" for m in r.stdout.split()} - {"common/jit.py"}
    assert imported - set(ks.sources) == set(), f"{name}: not in KernelSet.sources"
    assert all((ROOT / s).is_file() for s in ks.sources)


def test_a_hal_told_an_unknown_kernel_backend_exits_2_and_starts_nothing(tmp_path):
    prefix = unique_prefix("jit")
    env = dict(os.environ, EVO_SHM_PREFIX=prefix, EVO_RUN_DIR=str(tmp_path / "run"), EVO_KERNELS="fast")
    try:
        r = subprocess.run([sys.executable, "-m", "hal", "--config", str(ROOT / "config")], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "$EVO_KERNELS='fast': unknown; known: auto, aot, jit" in r.stderr
        assert "Traceback" not in r.stderr
        assert shm_entries(prefix) == []
    finally:
        remove_shm(prefix)
