"""Run `covseg infer --progress json` in a subprocess without blocking Slicer.

A reader thread turns the merged stdout/stderr into events on a queue; the widget drains them
with `poll()` from a QTimer. No Qt here, so it is tested outside Slicer. Cancel terminates the
whole process group (covseg may run worker threads or processes), then kills it after a grace
period; covseg's atomic output guarantees nothing half-written is left behind.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from CovSegLib.parameters import CovSegParameters


@dataclass(frozen=True)
class Progress:
    stage: str
    fraction: float
    overall: float


@dataclass(frozen=True)
class LogLine:
    text: str


@dataclass(frozen=True)
class Finished:
    returncode: int
    error: str | None  # covseg's own one-line message when it failed
    cancelled: bool


Event = Progress | LogLine | Finished


def build_infer_command(covseg: Sequence[str], input_path: Path, out_dir: Path,
                        parameters: CovSegParameters) -> list[str]:
    """The covseg command line for one run (`covseg` is the launcher, e.g. [python, "-m", "covseg"])."""
    command = [*covseg, "infer", str(input_path), "--out", str(out_dir), "--progress", "json",
               "--device", parameters.device, "--overlap", str(parameters.overlap)]
    if parameters.models:
        command += ["--models", ",".join(parameters.models)]
    for path in parameters.model_paths:
        command += ["--model", str(path)]
    if parameters.tta:
        command.append("--tta")
    if parameters.threads:
        command += ["--threads", str(parameters.threads)]
    if parameters.infection_threshold is not None:
        command += ["--infection-threshold", str(parameters.infection_threshold)]
    return command


def parse_line(line: str) -> Event:
    """A JSON progress object becomes Progress; anything else is a log line."""
    text = line.rstrip("\n")
    if text.startswith("{"):
        try:
            data = json.loads(text)
            return Progress(str(data["stage"]), float(data["fraction"]), float(data["overall"]))
        except (ValueError, KeyError, TypeError):
            pass
    return LogLine(text)


class CovsegProcess:
    """One covseg run: `start()`, then `poll()` until a `Finished` event; `cancel()` at any time."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, grace_seconds: float = 5.0):
        self.command = list(command)
        self.env = env
        self.grace_seconds = grace_seconds
        self._events: queue.Queue[Event] = queue.Queue()
        self._process: subprocess.Popen[str] | None = None
        self._cancelled = False
        self._last_error: str | None = None

    def start(self) -> None:
        options: dict[str, object] = {}
        if sys.platform == "win32":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            options["start_new_session"] = True
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env=self.env, **options)  # type: ignore[call-overload]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            event = parse_line(line)
            if isinstance(event, LogLine) and event.text.startswith("covseg:"):
                self._last_error = event.text.removeprefix("covseg:").strip()
            self._events.put(event)
        returncode = self._process.wait()
        error = None if returncode == 0 else (self._last_error or f"covseg exited with code {returncode}")
        self._events.put(Finished(returncode, None if self._cancelled else error, self._cancelled))

    def poll(self) -> list[Event]:
        """Every event since the last call (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def wait(self, timeout: float | None = None) -> list[Event]:
        """Block until the run finishes (for scripts and tests); returns all remaining events."""
        events: list[Event] = []
        while True:
            event = self._events.get(timeout=timeout)
            events.append(event)
            if isinstance(event, Finished):
                return events

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def cancel(self) -> None:
        """Terminate the run's process group; kill it if it has not ended after the grace period."""
        if not self.running or self._process is None:
            return
        self._cancelled = True
        self._signal(signal.SIGTERM if sys.platform != "win32" else signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        try:
            self._process.wait(timeout=self.grace_seconds)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL if sys.platform != "win32" else signal.SIGTERM)  # type: ignore[attr-defined]

    def _signal(self, sig: int) -> None:
        assert self._process is not None
        try:
            if sys.platform == "win32":
                self._process.send_signal(sig)
            else:
                os.killpg(self._process.pid, sig)
        except ProcessLookupError:
            pass
