"""Give the memory of large camera frames back to the operating system (glibc malloc).

A 2048x1536 rgb8 frame is 9.4 MB and a 4096x4096 one 50 MB; the node decodes, grades and
prepares each on its own threads. glibc keeps what those threads free in their heap arenas
for reuse, so after a burst of large frames the node's RSS stays at the burst's working set
(issue 16). `trim_freed_memory` (``malloc_trim(0)``) returns the free pages of every arena
to the OS; the node calls it when it falls idle after work, never while it serves pairs.

Measured alternatives (benchmarks/RESULTS.md, soak): fixing glibc's mmap threshold at 1 MiB
(``mallopt``) also returned the memory but cost ~70 ms per 2048x1536 pair on the dev CPU
(every large array became a fresh, zero-filled mapping); rejected. The larger share of the
growth was Fast DDS's history memory, bounded in config/fastdds_large_images.xml.
On a C library without ``malloc_trim`` (musl, macOS) this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


_LIBC = _libc()


def trim_freed_memory() -> bool:
    """Return free heap pages of all malloc arenas to the OS; False where unsupported."""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return bool(trim(0))


def dds_history_memory_warning(environ: dict[str, str] | None = None) -> str | None:
    """One line when Fast DDS will keep every input history slot at the largest image seen.

    rmw_fastrtps preallocates-and-keeps reader payloads unless RMW_FASTRTPS_USE_QOS_FROM_XML=1
    lets the Fast DDS profile (config/fastdds_large_images.xml: historyMemoryPolicy DYNAMIC)
    decide; the memory then stays bounded but large (qos_depth x the largest image, per eye).
    """
    env = os.environ if environ is None else environ
    if (env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp"
            or env.get("RMW_FASTRTPS_USE_QOS_FROM_XML") == "1"):
        return None
    return ("Fast DDS keeps each input history slot at the largest image it held (up to qos_depth x the largest image "
            "per eye): set RMW_FASTRTPS_USE_QOS_FROM_XML=1 with "
            "FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_large_images.xml "
            "so payloads are freed after use")
