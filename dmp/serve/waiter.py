"""A go-between that runs one command and tells its own parent how that command ended.

``dmp serve``'s master is gunicorn's arbiter, which reaps every child it has
(``waitpid(-1)``): the ingest worker's exit status was lost, and Python's ``Popen`` then
reads it as 0. So serve starts ``python -m dmp.serve.waiter COMMAND...``: the waiter runs the
command as its own child, forwards SIGTERM and SIGINT to it, ends it if serve goes away,
and writes its pid and return code (negative: the signal that killed it) as one line on
stdout.
``{waiter}`` in the command is replaced by the waiter's pid (the command's parent), and
the files named in ``DMP_PASS_FDS`` (a listening socket) are passed on to the command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

PASS_FDS = "DMP_PASS_FDS"  # comma-separated file descriptors the command inherits


def describe_exit(returncode: int | None) -> str:
    """Return how a process ended, as a log line says it: "exited with status 1",
    "killed by SIGKILL"; None (not reported) is "ended without a report"."""
    if returncode is None:
        return "ended without a report (its waiter died)"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def parse_report(line: str) -> tuple[int, int] | None:
    """Return the (pid, return code) a waiter reported on a line of its stdout, or None."""
    try:
        pid, code = line.split()
        return int(pid), int(code)
    except ValueError:
        return None


def main(argv: list[str]) -> int:
    """Run ``argv``, report its return code on stdout, and return 0."""
    parent = os.getppid()
    cmd = [arg.replace("{waiter}", str(os.getpid())) for arg in argv]
    fds = tuple(int(fd) for fd in os.environ.pop(PASS_FDS, "").split(",") if fd)
    # The command's stdout goes to our stderr: our stdout carries only the report.
    child = subprocess.Popen(cmd, stdout=sys.stderr.fileno(), pass_fds=fds)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))
    ending = False
    while True:
        try:
            child.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent and not ending:  # serve is gone: end the command too
                child.terminate()
                ending = True
    try:
        print(child.pid, child.returncode, flush=True)
    except BrokenPipeError:
        pass  # no one listens any more
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
