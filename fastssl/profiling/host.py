"""Host context: cores available and used, GPU utilisation and memory (when a GPU is present).

CPU use is read from ``/proc`` (Linux): this process and its descendants (DataLoader workers),
and the whole machine. GPU utilisation comes from NVML through ``torch.cuda.utilization`` when
``pynvml`` is installed, else from ``nvidia-smi``. Everything degrades to ``None`` elsewhere.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

import torch

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def _cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def _system_busy_ticks() -> int | None:
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(values) - values[3] - values[4]  # minus idle and iowait
    except (OSError, IndexError, ValueError):
        return None


def gpu_sample(device: torch.device) -> tuple[float | None, int | None]:
    """(utilisation %, memory used in bytes) of the device, or Nones."""
    if device.type != "cuda":
        return None, None
    try:
        return float(torch.cuda.utilization(device)), int(torch.cuda.device_memory_used(device))
    except Exception:  # noqa: BLE001 - pynvml missing or NVML unavailable: try nvidia-smi
        pass
    if shutil.which("nvidia-smi") is None:
        return None, None
    index = device.index or 0
    try:
        out = subprocess.run(
            ["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5,
        ).stdout.strip().splitlines()[0]
        util, mem = (float(x) for x in out.split(","))
        return util, int(mem * 2**20)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return None, None


class HostSampler:
    """Samples CPU use of this process tree and the machine (and the GPU) in a thread while
    a ``with`` block runs; ``result()`` gives cores used on average and GPU statistics."""

    def __init__(self, device: torch.device, interval: float = 0.25) -> None:
        self.device, self.interval = device, interval
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._gpu_util: list[float] = []
        self._gpu_mem: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample_cpu(self, first: bool = False) -> None:
        for pid in _descendants(os.getpid()):
            ticks = _cpu_ticks(pid)
            if ticks is None:
                continue
            # a process first seen after the start began during the window: its baseline is 0
            self._first.setdefault(pid, ticks if first else 0)
            self._last[pid] = ticks

    def _run(self) -> None:
        gpu_every = max(1, round(0.5 / self.interval))  # nvidia-smi costs ~50 ms a call
        i = 0
        while not self._stop.wait(self.interval):
            self._sample_cpu()
            if self.device.type == "cuda" and i % gpu_every == 0:
                util, mem = gpu_sample(self.device)
                if util is not None and mem is not None:
                    self._gpu_util.append(util)
                    self._gpu_mem.append(mem)
            i += 1

    def __enter__(self) -> HostSampler:
        self._t0 = time.perf_counter()
        self._sys0 = _system_busy_ticks()
        self._sample_cpu(first=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample_cpu()
        self._wall = time.perf_counter() - self._t0
        sys1 = _system_busy_ticks()
        self._sys = None if sys1 is None or self._sys0 is None else sys1 - self._sys0

    def result(self) -> dict:
        wall = max(self._wall, 1e-9)
        ticks = sum(self._last[p] - self._first[p] for p in self._last)
        return {
            "cpu_cores_used": ticks / TICKS / wall if self._last else None,
            "system_cpu_cores_busy": self._sys / TICKS / wall if self._sys is not None else None,
            "gpu_utilisation_percent": (statistics.median(self._gpu_util)
                                        if self._gpu_util else None),
            "gpu_memory_used_bytes": max(self._gpu_mem) if self._gpu_mem else None,
        }


def describe(device: torch.device) -> dict:
    """Static facts about the host: cores, device name and memory, library versions."""
    from importlib import metadata

    import fastssl

    dali_version = next((d.version for d in metadata.distributions()  # no slow DALI import
                         if (d.metadata["Name"] or "").lower().startswith("nvidia-dali")), None)
    cuda = device.type == "cuda"
    return {
        "cpu_cores_available": cores_available(),
        "cpu_count": os.cpu_count() or 1,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "gpu_memory_total_bytes": torch.cuda.get_device_properties(device).total_memory
        if cuda else None,
        "torch": torch.__version__,
        "dali": dali_version,
        "fastssl": fastssl.__version__,
    }


def machine_line(device: str) -> str:
    """One line naming the machine for benchmark tables: host, CPU model, CPU count, GPU."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo").read().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = f"{platform.node()}: {cpu}, {os.cpu_count()} logical CPUs"
    if device == "cuda":
        name += f", GPU {torch.cuda.get_device_name()}"
    return name


NOTES = "## Notes"


def write_results(path: str | os.PathLike, text: str) -> None:
    """Write a benchmark's results file, keeping the hand-written ``## Notes`` section (and all
    below it) of the file it replaces."""
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    if NOTES in old:
        text += "\n" + old[old.index(NOTES):]
    path.write_text(text)
