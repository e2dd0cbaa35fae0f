"""Run a command; write the CPU time of its whole process tree, as JSON, when it is over.

    python -m bench.rusage OUT.json -- COMMAND...

Sampling a process tree misses whatever a short-lived process did between two samples, and
getrusage(RUSAGE_CHILDREN) only counts descendants that their own parent waited for. A parse pool
started by forkserver is neither: its workers are children of the forkserver process, which the
crawler never waits for. So this wrapper makes itself the "child subreaper" (Linux prctl): every
orphaned descendant is re-parented to it instead of init, and it waits for all of them. Then
RUSAGE_CHILDREN holds the user and system time of every process the command ever started.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):  # not Linux: orphans' CPU will be missing
        return False


def reap_all() -> None:
    """Wait for every descendant, the orphans re-parented to us included."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.rusage OUT.json -- COMMAND...", file=sys.stderr)
        return 2
    out, command = Path(argv[0]), argv[2:]
    exact = become_subreaper()
    child = subprocess.Popen(command)
    # Pass a stop on to the command, so the benchmark can end a crawl that runs too long.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda s, _frame: child.send_signal(s))
    returncode = child.wait()
    reap_all()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = {
        "returncode": returncode,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "largest_process_rss_kb": usage.ru_maxrss,
        "orphans_counted": exact,
    }
    out.write_text(json.dumps(report))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
