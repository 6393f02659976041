"""Peak extra resident memory of one call, on Linux, for tests and benchmarks that run it in a fresh process.

``ru_maxrss`` alone is not enough: it is the peak of the process's whole life, so a peak reached before the
call (importing torch touches more pages on some machines than on others) hides the call's own. Here the
high-water mark (VmHWM) is reset to the current resident set just before the call (``/proc/self/clear_refs``,
Linux >= 4.0), and the call's extra memory is the new high-water mark minus the resident set before it
(outputs it returns included).

Run the child with ``MMAP_ENV`` merged into its environment: with glibc's mmap threshold fixed, every large
block is its own mapping and goes back to the system when freed, so one call's leftovers cannot lend memory
to the next call and hide its growth (glibc otherwise raises the threshold as blocks are freed and keeps them
on its heap).
"""

from __future__ import annotations

from typing import Any, Callable

MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def status_bytes(key: str) -> int:
    """A size field of /proc/self/status (VmRSS, VmHWM, ...) in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) * 1024  # kB -> bytes


def peak_extra(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Run fn(); return (its result, the peak resident memory it added in bytes)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current VmRSS
    before = status_bytes("VmRSS")
    out = fn()
    return out, status_bytes("VmHWM") - before
