"""The work of the CovSeg Slicer module, kept out of the module file so it can be tested with
slicer-core alone (no Qt): running covseg in a subprocess, and loading its outputs into a scene."""

from CovSegLib.parameters import CovSegParameters
from CovSegLib.process import CovsegProcess, Finished, LogLine, Progress, build_infer_command
from CovSegLib.scene import load_results, write_input_volume

__all__ = [
    "CovSegParameters",
    "CovsegProcess",
    "Finished",
    "LogLine",
    "Progress",
    "build_infer_command",
    "load_results",
    "write_input_volume",
]
