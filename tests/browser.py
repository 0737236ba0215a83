"""Headless Chromium for the browser tests: a page's DOM after its scripts ran, a
screenshot, and the MLflow and optuna-dashboard servers on free loopback ports.

    chromium --headless=new --dump-dom --virtual-time-budget=MS URL

Virtual time skips the pages' timers but waits for their requests, so a budget of a
few seconds is plenty (a page takes 2-5 s of wall time here); without one the DOM is
dumped before the data arrives. Each call gets a fresh profile (the UIs keep state in
local storage) and a wall-clock limit that kills Chromium's whole process group.
"""

from __future__ import annotations

import contextlib
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--window-size=1400,800"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(url: str, extra: list[str], budget_ms: int = 10000, timeout: float = 90) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile}",
                                 f"--virtual-time-budget={budget_ms}", *extra, url],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=profile,
                                start_new_session=True)
        try:
            return proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            raise


def dom(url: str, budget_ms: int = 10000) -> Node:
    """The page as parsed HTML, after its scripts ran."""
    text = _run(url, ["--dump-dom"], budget_ms)
    assert "<html" in text, f"Chromium rendered nothing for {url}"
    builder = _Builder()
    builder.feed(text)
    return builder.root


def screenshot(url: str, path: Path) -> Path:
    _run(url, [f"--screenshot={Path(path).resolve()}"])
    return Path(path)


class Node:
    """An element: its tag, attributes and children (elements and text)."""

    def __init__(self, tag: str, attrs: dict, parent: Node | None):
        self.tag, self.attrs, self.children, self.parent = tag, attrs, [], parent

    def text(self) -> str:
        return " ".join("".join(c if isinstance(c, str) else f" {c.text()} " for c in self.children).split())

    def all(self, test) -> list[Node]:
        found = []
        for child in self.children:
            if isinstance(child, Node):
                found += [child] * bool(test(child)) + child.all(test)
        return found


class _Builder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#root", {}, None)
        self.skip = 0                                  # inside <script> or <style>

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")
        node = Node(tag, dict(attrs), self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        self.skip = max(0, self.skip - (tag in ("script", "style")))
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        if not self.skip:
            self.current.children.append(data)


def js_number(value: float) -> str:
    """A float as JavaScript prints it (what the MLflow UI shows: every digit)."""
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        return format(Decimal(text), "f") if -7 < int(exponent) < 21 else f"{mantissa}e{int(exponent):+d}"
    return text


@contextlib.contextmanager
def serve(command: list[str], health: str, env: dict | None = None, wait_s: float = 90):
    """Run a server in its own process group until the block ends; wait for `health` to answer 200."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + wait_s
        while True:
            assert proc.poll() is None, f"{command[0]} exited with {proc.returncode}"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(health, timeout=2) as answer:
                    if answer.status == 200:
                        break
            assert time.monotonic() < deadline, f"{command[0]} did not answer at {health} in {wait_s:g} s"
            time.sleep(0.3)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def mlflow_ui(db: Path, port: int):
    """`mlflow ui` on the store, as the sweep's summary says (one worker, no job runner: on 2
    cores MLflow would otherwise start 7 more processes)."""
    command = [str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{db}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return serve(command, f"http://127.0.0.1:{port}/health", {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})


def optuna_dashboard(db: Path, port: int):
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), f"sqlite:///{db}", "--host", "127.0.0.1",
               "--port", str(port), "--quiet"]
    return serve(command, f"http://127.0.0.1:{port}/api/studies")
