"""Runs the repository's scripts many times, each run in a fork of one process that imported every script: a test
corpus or a one-line error pays TensorFlow's import once for the whole session, not once per run or per script.

    python tests/fork_runner.py SCRATCH_DIRECTORY
    with ForkRunner(log_path) as runner: runner.run(["export.py", *args], cwd, timeout[, code])   # from a test

Reads one JSON request a line from stdin, {"argv": [...], "cwd": "...", "timeout": seconds[, "stdin": text]}
(the child's standard input: that text, else none), and answers each
with one JSON line on stdout: {"exit": status or null, "signal": number or null, "max_rss_kib": the child's peak
resident memory, "seconds": wall time, "stdout": text, "stderr": text}. The child runs the script argv[0] names as
`python <script>.py` would (its flags defined, then `errors.run` of its main), with that argv; or, if the request
has "code", that Python code, after defining the flags of the script argv[0] names, if it names one (what the
scripts import is imported already). As the interpreter would: SystemExit's code is its status, any other
exception a traceback and status 1. It is killed by SIGALRM at its timeout, and its address space is capped
(`ADDRESS_SPACE_HEADROOM` above the parent's) so a blow-up fails there instead of taking the machine's memory. The
parent never runs a TensorFlow op and defines no flags, so each child starts TensorFlow's runtime fresh and defines
only its own script's flags (several scripts define the same names).
"""

import contextlib
import importlib
import json
import os
import pathlib
import resource
import runpy
import select
import signal
import subprocess
import sys
import time
import traceback

REPO = pathlib.Path(__file__).resolve().parent.parent
# The repository's scripts, imported by the parent (their flags are defined when they run).
SCRIPTS = ("data", "evaluate", "export", "report", "search", "train_supervised", "train_unsupervised")
# What a child may map beyond the parent's address space: room for TensorFlow's runtime, its threads' stacks and
# malloc arenas, and a few GiB of blow-up to measure, but no more.
ADDRESS_SPACE_HEADROOM = 6 << 30
# How long after its SIGALRM a child that has not died is killed outright.
KILL_GRACE_SECONDS = 5


def address_space():
    """This process's virtual memory size in bytes (VmSize)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def exit_status(code):
    """The status the interpreter exits with for `SystemExit(code)`; a message is printed, as it prints it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def redirect(fd, path, flags):
    target = os.open(path, flags, 0o644)
    os.dup2(target, fd)
    os.close(target)


def run_child(request, stdin_path, stdout_path, stderr_path):
    """In the forked child: the script argv[0] names (or the request's code) with the request's argv in its cwd,
    its standard input read from `stdin_path` (the requests are the parent's to read); never returns."""
    status = 1
    try:
        redirect(0, stdin_path, os.O_RDONLY)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 (the process's own, as the interpreter's)
        for fd, path in ((1, stdout_path), (2, stderr_path)):
            redirect(fd, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        limit = address_space() + ADDRESS_SPACE_HEADROOM
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.alarm(int(request["timeout"]))
        os.chdir(request["cwd"])
        sys.argv = list(request["argv"])
        script = pathlib.Path(sys.argv[0]).stem
        try:
            if "code" in request:
                if script in SCRIPTS:
                    sys.modules[script].define_flags()
                exec(compile(request["code"], "<request>", "exec"), {"__name__": "__main__"})
            else:
                runpy.run_path(str(REPO / f"{script}.py"), run_name="__main__")
            status = 0
        except SystemExit as exit_:
            status = exit_status(exit_.code)
        except BaseException:  # what escapes a script: the interpreter prints it and exits 1
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)


def wait(pid, timeout):
    """(status, rusage) of the child `pid`, killed if it outlives its SIGALRM by KILL_GRACE_SECONDS."""
    child = os.pidfd_open(pid)
    try:
        if not select.select([child], [], [], timeout + KILL_GRACE_SECONDS)[0]:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(child)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def serve(requests, answers, scratch):
    """Answers each request line of `requests` with a line on `answers`."""
    stdin_path, stdout_path, stderr_path = (os.path.join(scratch, name) for name in ("stdin", "stdout", "stderr"))
    for line in requests:
        request = json.loads(line)
        pathlib.Path(stdin_path).write_text(request.get("stdin", ""), encoding="utf-8")
        answers.flush()  # nothing buffered for the child to write again
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            run_child(request, stdin_path, stdout_path, stderr_path)
        status, usage = wait(pid, request["timeout"])
        answer = {
            "exit": os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "max_rss_kib": usage.ru_maxrss,
            "seconds": time.monotonic() - start,
            "stdout": pathlib.Path(stdout_path).read_text(errors="replace"),
            "stderr": pathlib.Path(stderr_path).read_text(errors="replace"),
        }
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


class ForkRunner:
    """A test's side: this program started in a subprocess, its stderr (TensorFlow's import logs) in `log_path`,
    answering `run` calls."""

    def __init__(self, log_path):
        self.log_path = pathlib.Path(log_path)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, str(self.log_path.parent)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                cwd=REPO,
            )

    def run(self, argv, cwd, timeout, code=None, stdin=None):
        """The answer to one request (see the module docstring)."""
        request = {"argv": [str(arg) for arg in argv], "cwd": str(cwd), "timeout": timeout}
        if code is not None:
            request["code"] = code
        if stdin is not None:
            request["stdin"] = stdin
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"fork_runner exited ({self.process.wait()}): {self.log_path.read_text()[-3000:]}")
        return json.loads(answer)

    def __enter__(self):
        return self

    def __exit__(self, *exception):
        # Its work is done: killed, as TensorFlow's interpreter shutdown takes seconds (its scratch files are in
        # log_path's directory).
        self.process.kill()
        self.process.wait(timeout=60)


def main():
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.path.insert(0, str(REPO))
    for script in SCRIPTS:
        importlib.import_module(script)
    serve(sys.stdin, sys.stdout, sys.argv[1])


if __name__ == "__main__":
    main()
