"""Helpers of the HMI tests (no tests here): config with an [hmi] port, `evo up`, headless Chromium.

Chromium is Debian's (/usr/bin/chromium + chromedriver, installed by `make setup`), started with
no network of its own (no sync, no component updates, no QUIC) and a fresh profile per test module.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.grpc_support import make_config
from tests.helpers import REPO, module_env, wait_for

ARTIFACTS = REPO / "tests" / "artifacts" / "hmi"  # screenshots (git-ignored)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def hmi_config(dest: Path, grpc_port: int, hmi_port: int, *, enabled: bool = True, max_live_hz: float = 20.0,
               default_live_hz: float = 10.0, **kw: Any) -> Path:
    """tests.grpc_support.make_config plus the [hmi] section on its own port."""
    make_config(dest, grpc_port, **kw)
    path = dest / "config.toml"
    section = (f"[hmi]\nenabled = {'true' if enabled else 'false'}\nbind = \"127.0.0.1\"\nport = {hmi_port}\n"
               f"max_live_hz = {max_live_hz}\ndefault_live_hz = {default_live_hz}\n")
    text, n = re.subn(r"(?ms)^\[hmi\]\n.*?(?=^\[)", section + "\n", path.read_text())
    assert n == 1, "config.toml has no [hmi] section to replace"
    path.write_text(text)
    add_dwell_recipe(dest)
    return dest


DWELL_RECIPE = """# HMI tests: a long dwell, so pause / resume / abort do not depend on how fast the axes are.
[recipe]
name = "hmi_dwell"
description = "Wait 60 s"

[[step]]
type = "dwell"
seconds = 60.0
"""


def add_dwell_recipe(cfg_dir: Path) -> str:
    (cfg_dir / "recipes" / "hmi_dwell.toml").write_text(DWELL_RECIPE)
    return "hmi_dwell"


def http(method: str, url: str, body: Any = None, token: str | None = None,
         timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body) of one HTTP request; error statuses are returned, not raised."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


class EvoUp:
    """`python -m evo up` of a config directory with its own prefix and run directory."""

    def __init__(self, prefix: str, cfg: Path, run_dir: Path, log: Path) -> None:
        self.prefix, self.cfg, self.run_dir, self.log_path = prefix, cfg, run_dir, log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "evo", "up", "--config", str(cfg)], cwd=REPO, stdout=self._log,
            stderr=subprocess.STDOUT, env=module_env(prefix, EVO_RUN_DIR=str(run_dir)), start_new_session=True)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


def browser_or_skip() -> None:
    """Skip (with the reason) only where no browser can be installed; else it must be there."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        pytest.skip(f"no headless browser: {', '.join(missing)} missing (make setup installs chromium "
                    "and chromium-driver)")


def chromium(profile: Path, width: int = 1600, height: int = 1100, extra_args: tuple[str, ...] = ()):  # noqa: ANN201
    """Headless Chromium under chromedriver, console and network logs on, no traffic of its own."""
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--disable-default-apps", "--disable-extensions",
                "--metrics-recording-only", "--no-default-browser-check", f"--user-data-dir={profile}",
                f"--window-size={width},{height}", *extra_args):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(profile.parent / "chromedriver.log"))
    driver = webdriver.Chrome(options=opts, service=service)
    driver.set_page_load_timeout(60)  # a stuck page fails the test with a reason, not the suite's timeout
    driver.set_script_timeout(30)
    return driver


def requested_urls(driver) -> list[str]:  # noqa: ANN001
    """Every URL the page asked for since the last call (from the DevTools performance log)."""
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            p = msg["params"]
            urls.append(p["request"]["url"] if "request" in p else p["url"])
    return urls


def screenshot(driver, name: str) -> Path:  # noqa: ANN001
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def clean_profile(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def wait_http(url: str, proc_alive, timeout: float = 60.0) -> None:  # noqa: ANN001
    def up() -> bool:
        assert proc_alive(), "the machine exited"
        status, _ = http("GET", url, timeout=2)
        return status == 200
    wait_for(up, timeout=timeout, interval=0.1, what=f"{url} answering")
