"""Walls around the worker: its own uid, no network, its own processes, a filesystem without secrets, limits.

The grader starts the worker (minilm/course/worker.py) through this module. What it can apply
depends on who runs the grader:

    root (Gradescope's container, CI, a course server)
        util-linux `unshare` gives the worker new mount, pid, network, IPC and UTS namespaces;
        inside, this file (run as a script, standard library only) builds a new root on a
        tmpfs holding only read-only binds of the system, Python and its site-packages, with
        the grading tree at /submission and a private /tmp, /dev and /proc; the instructor's
        minilm (its source tree, or an install in site-packages) is not there, nor are the
        hidden tests, the expected outputs, the results folder or the grader's own files.
        It then drops to uid/gid 65534 (nobody) with no_new_privs, sets the limits and
        starts the worker. Killing the namespace's first process ends everything in it.
    an ordinary user, where unprivileged user namespaces are allowed
        the same, mapped to root inside a user namespace: everything but the separate uid.
    an ordinary user, no namespaces
        limits and a new session only; the worker can read what this user can, reach the
        network and signal the grader. The verdict still never comes from the worker, the
        grader's record goes through a pipe the worker does not hold, and the grader's
        processes are made non-dumpable (their memory, descriptors and environment are closed
        to the worker's uid); orphans the worker leaves are reparented to the grader (a child
        subreaper) and killed.

`probe()` says which applies, in one line the grade prints.

Design choices:
- Only what the system has: `unshare`, mount(2) and prctl(2) through ctypes, setrlimit.
- The limits are rlimits on the worker: address space and data (memory), CPU seconds,
  processes (counted per uid, so set above what the uid already runs), file size, open files,
  no core files. The wall-clock timeout is the grader's: it kills the namespace.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass

NOBODY = 65534
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
DEVICES = ("null", "zero", "full", "random", "urandom")
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group", "nsswitch.conf")
SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
TREE = "/submission"


@dataclass(frozen=True)
class Limits:
    memory_mb: int = 4096  # RLIMIT_DATA; the address space may be 4 times that (threads, mappings)
    cpu_s: int = 3600
    processes: int = 256  # above what the uid already runs
    file_mb: int = 256
    open_files: int = 1024


@dataclass(frozen=True)
class Isolation:
    mode: str  # "root" | "userns" | "none"
    user: str

    @property
    def line(self) -> str:
        if self.mode == "root":
            return ("isolation: the submission runs as uid 65534 in its own mount, pid, network, IPC and UTS "
                    "namespaces, seeing only the system, Python and the grading tree; limits on memory, CPU, "
                    "processes and file size; a wall-clock timeout")
        if self.mode == "userns":
            return (f"isolation: not root ({self.user}): no separate uid for the submission; it still runs in its own "
                    "user, mount, pid, network, IPC and UTS namespaces, seeing only the system, Python and the "
                    "grading tree, under the limits and the timeout")
        return (f"isolation: not root ({self.user}) and no user namespaces: no separate uid, no network or process "
                "namespace, no private filesystem (the submission can read what this user can); limits, the "
                "timeout, a pipe-only record and non-dumpable grader processes still apply, and the verdict "
                "is still made outside the submission")


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def probe() -> Isolation:
    """What this machine lets the grader apply (tried, not guessed: a refused namespace is seen here)."""
    unshare = shutil.which("unshare")
    flags = ["--mount", "--pid", "--net", "--ipc", "--uts", "--fork"]
    if unshare and os.geteuid() == 0 and _tries([unshare, *flags, "true"]):
        return Isolation("root", _user())
    if unshare and _tries([unshare, "--user", "--map-root-user", *flags, "true"]):
        return Isolation("userns", _user())
    return Isolation("none", _user())


def _tries(argv) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def protect_grader() -> None:
    """Make this (trusted) process non-dumpable and the reaper of orphans it starts."""
    for option in (PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER):
        try:
            prctl(option, 0 if option == PR_SET_DUMPABLE else 1)
        except OSError:
            pass


def kill_orphans() -> None:
    """SIGKILL every process whose parent is this one (orphans of the worker land here), repeatedly."""
    me = str(os.getpid())
    for _ in range(50):
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[1].decode() == me and fields[0] != b"Z":
                found.append(int(pid))
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if not found:
            return


def _site_dirs(repo: str) -> list[str]:
    """Where the worker's Python finds torch and numpy: this interpreter's path, minus the instructor's tree."""
    repo = os.path.realpath(repo)
    out = []
    for p in sys.path:
        if not p or not os.path.isdir(p) or not os.access(p, os.R_OK | os.X_OK):
            continue
        real = os.path.realpath(p)
        if real == repo or real.startswith(repo + os.sep) and "site-packages" not in real:
            continue
        if real not in out:
            out.append(real)
    return out


def _count_tasks(uid: int) -> int:
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                if os.stat(f"/proc/{pid}/task/{task}").st_uid == uid:
                    n += 1
        except OSError:
            continue
    return n


def spawn(isolation: Isolation, *, tree: str, root_dir: str, scratch: str, repo: str, env: dict, limits: Limits,
          worker_config: dict, fds: tuple[int, int], output_fd: int) -> subprocess.Popen:
    """Start the worker behind the walls `isolation` allows; `fds` are the worker's ends of the two pipes."""
    sites = _site_dirs(repo)
    walled = isolation.mode in ("root", "userns")
    python = os.path.realpath(sys.executable)  # the interpreter itself: the worker sets its own path (-I -S)
    if not os.access(python, os.X_OK):  # one this user may start but not reach by path: the system's, same version
        python = shutil.which(f"python{sys.version_info[0]}.{sys.version_info[1]}") or sys.executable
    binds = [p for p in SYSTEM if os.path.lexists(p)]
    binds += [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(python))}
              if os.access(p, os.R_OK | os.X_OK)]
    binds += sites
    kept = []
    for path in binds:  # a folder already bound (with everything under it) is not bound twice
        if path not in kept and not any(path.startswith(k.rstrip("/") + "/") for k in binds if k != path):
            kept.append(path)
    binds = kept
    filtered = {}  # a site-packages holding the instructor's minilm: rebuilt entry by entry, without it
    for site in sites:
        names = sorted(os.listdir(site)) if os.path.isdir(site) else []
        mine = [n for n in names if n == "minilm" or (n.startswith(("minilm-", "minilm_", "__editable__"))
                                                          and "minilm" in n)]
        if mine:
            filtered[site] = [n for n in names if n not in mine]
            binds = [b for b in binds if b != site]
    uid = NOBODY if isolation.mode == "root" else os.getuid()
    already = _count_tasks(uid)
    config = {
        "mount": walled, "pidns": walled, "root": root_dir, "tree": tree, "binds": binds, "filtered": filtered,
        "setuid": NOBODY if isolation.mode == "root" else None,
        "python": python, "paths": [TREE if walled else tree] + sites,
        "env": {**env, "HOME": "/tmp" if walled else scratch, "TMPDIR": "/tmp" if walled else scratch,
                "MINILM_WORKER_CONFIG": json.dumps({**worker_config, "fds": list(fds)})},
        "limits": {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "file_mb": limits.file_mb,
                   "open_files": limits.open_files, "processes": already + limits.processes},
    }
    script = os.path.abspath(__file__)
    argv = [python, "-I", "-S", script]
    if walled:
        argv = [shutil.which("unshare"), *(["--user", "--map-root-user"] if isolation.mode == "userns" else []),
                "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--kill-child", "--", *argv]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output_fd, stderr=output_fd, pass_fds=fds,
                            env={"MINILM_SANDBOX": json.dumps(config), "PATH": "/usr/bin:/bin"},
                            start_new_session=True, cwd="/")


# ---------------------------------------------------------------------------------------- inside


def _mount(source, target, fstype, flags, data=None) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    args = [x.encode() if isinstance(x, str) else x for x in (source, target, fstype, data)]
    if libc.mount(args[0], args[1], args[2], ctypes.c_ulong(flags), args[3]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def _bind(source: str, target: str, writable: bool = False) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if writable:
        return
    locked = os.statvfs(target).f_flag  # a user namespace may not clear the flags the mount already has
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    for st, ms in ((8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if locked & st:
            flags |= ms
    _mount(None, target, None, flags)


def _new_root(config: dict) -> None:
    root = config["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755")
    # The worker's scratch /tmp first: a Python or site-packages that lives under /tmp (a venv in a
    # checkout cloned there, as CI does) is bound on top of it, not hidden by it.
    size = config["limits"]["file_mb"]
    os.makedirs(root + "/tmp", exist_ok=True)
    _mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode=1777")
    for path in config["binds"]:
        inside = root + path
        if os.path.islink(path) and not os.path.lexists(inside):  # /bin -> usr/bin on merged-/usr systems
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            os.symlink(os.readlink(path), inside)
        elif os.path.exists(path) and not os.path.islink(path) and not os.path.ismount(inside):
            _bind(path, inside)
    for name in ETC:
        if os.path.exists("/etc/" + name):
            _bind("/etc/" + name, f"{root}/etc/{name}")
    for site, names in config["filtered"].items():  # every entry but the instructor's minilm
        inside = root + site
        os.makedirs(inside, exist_ok=True)
        _mount("tmpfs", inside, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        for name in names:
            source = os.path.join(site, name)
            if os.path.islink(source):
                os.symlink(os.readlink(source), os.path.join(inside, name))
            elif os.path.exists(source):
                _bind(source, os.path.join(inside, name))
        _mount(None, inside, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    _bind(config["tree"], root + TREE)
    os.makedirs(root + "/dev", exist_ok=True)
    _mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755")
    for name in DEVICES:
        _bind("/dev/" + name, f"{root}/dev/{name}", writable=True)
    os.makedirs(root + "/dev/shm")
    _mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={size}m,mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", exist_ok=True)
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chroot(root)
    os.chdir("/tmp")


def _limit_and_exec(config: dict) -> None:
    limits = config["limits"]
    memory = limits["memory_mb"] << 20
    for which, value in ((resource.RLIMIT_DATA, memory), (resource.RLIMIT_AS, 4 * memory),
                         (resource.RLIMIT_CPU, limits["cpu_s"]), (resource.RLIMIT_FSIZE, limits["file_mb"] << 20),
                         (resource.RLIMIT_NOFILE, limits["open_files"]), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NPROC, limits["processes"])):
        resource.setrlimit(which, (value, value))
    if config["setuid"] is not None:
        os.setgroups([])
        os.setresgid(config["setuid"], config["setuid"], config["setuid"])
        os.setresuid(config["setuid"], config["setuid"], config["setuid"])
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    boot = (f"import sys; sys.path[:0] = {config['paths']!r}; "
            "from minilm.course.worker import main; main()")
    os.execve(config["python"], [config["python"], "-I", "-S", "-B", "-c", boot], config["env"])


def init() -> None:
    """Run inside the new namespaces (or, without them, as the worker's parent): build the view, then start
    the worker; as the pid namespace's first process, stay to reap and pass on the worker's exit."""
    config = json.loads(os.environ.pop("MINILM_SANDBOX"))
    if config["mount"]:
        _new_root(config)
    if not config["pidns"]:
        _limit_and_exec(config)
    worker = os.fork()
    if worker == 0:
        _limit_and_exec(config)
    for fd in json.loads(config["env"]["MINILM_WORKER_CONFIG"])["fds"]:
        os.close(fd)  # only the worker holds the pipes: its death is the grader's end of file
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == worker:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else
                     128 + os.WTERMSIG(status))


if __name__ == "__main__":
    init()
