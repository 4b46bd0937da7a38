"""Give the memory of large camera frames back to the operating system (glibc malloc).

A 2048x1536 rgb8 frame is 9.4 MB and a 4096x4096 one 50 MB; the node decodes, grades and
prepares each on its own threads. glibc serves such blocks with mmap at first, but after
the first one is freed it raises its mmap threshold to that size (up to 32 MB on 64-bit), so
later frames come from the threads' heap arenas and stay there when freed: the black-box
test saw the node's RSS grow from 453 to 811 MB over a few bursts of large pairs (issue 16).

Fixing the mmap threshold (``mallopt(M_MMAP_THRESHOLD, ...)``, which also switches the
dynamic adjustment off) makes every block of 1 MiB or more an mmap that ``free`` unmaps at
once; smaller blocks are trimmed from the top of the heap beyond ``M_TRIM_THRESHOLD``.
Cost: one mmap/munmap pair per large array, microseconds against a frame's milliseconds.
On a C library without ``mallopt`` (musl, macOS) this does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_MMAP_THRESHOLD = 1 << 20  # 1 MiB: a 256 px prepared eye (192 KiB) stays on the heap
DEFAULT_TRIM_THRESHOLD = 8 << 20


def return_freed_memory_to_the_os(mmap_threshold: int = DEFAULT_MMAP_THRESHOLD,
                                  trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Set glibc's mmap and trim thresholds for this process; False where unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))


def dds_history_memory_warning(environ: dict[str, str] | None = None) -> str | None:
    """One line when Fast DDS will keep every input history slot at the largest image seen.

    rmw_fastrtps preallocates-and-keeps reader payloads unless RMW_FASTRTPS_USE_QOS_FROM_XML=1
    lets the Fast DDS profile (config/fastdds_large_images.xml: historyMemoryPolicy DYNAMIC)
    decide; the memory then stays bounded but large (qos_depth x the largest image, per eye).
    """
    env = os.environ if environ is None else environ
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp" or env.get("RMW_FASTRTPS_USE_QOS_FROM_XML") == "1":
        return None
    return ("Fast DDS keeps each input history slot at the largest image it held (up to qos_depth x the largest image "
            "per eye): set RMW_FASTRTPS_USE_QOS_FROM_XML=1 with FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_large_images.xml "
            "so payloads are freed after use")
