"""Process 1 of one test-bed host, and its remote shell daemon:
`python host_init.py HOSTNAME HOSTS_FILE PRIVATE_DIR SOCKET LIFELINE_FD`.

Started by `unshare --uts --ipc --pid --fork --mount` inside the host's network namespace, it gives the
host its own name, /proc, /dev/shm, /etc/hosts and private folder. Then it serves `rsh.py` at SOCKET: a
command sent there (with the caller's stdin, stdout and stderr) runs on this host, in a fresh session
and a login-like environment, and its exit status goes back, as with ssh. It has to be this process:
a process on one host cannot enter a sibling host's PID namespace, only this host's own process can
start processes in it. It reaps the orphans reparented to it, and exits when the test session that owns
the bed is gone (the lifeline, a pipe whose other end only the session holds, reads end-of-file); the
kernel then kills every process of the host, so even a SIGKILLed session leaves nothing running.
"""

import json
import os
import select
import socket
import subprocess
import sys

MOUNT_SECONDS = 10
TICK_SECONDS = 0.2
LOGIN_ENVIRONMENT = {"HOME": "/root", "LANG": "C.UTF-8", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, timeout=MOUNT_SECONDS)


def become_host(hostname: str, hosts_file: str, private: str) -> None:
    socket.sethostname(hostname)
    mount("-t", "proc", "-o", "nosuid,noexec,nodev", "proc", "/proc")  # as unshare --mount-proc does
    mount("-t", "tmpfs", "-o", "size=512m,mode=1777", "tmpfs", "/dev/shm")
    mount("--bind", hosts_file, "/etc/hosts")  # the bed's names, h1..hN, resolve on every host
    mount("-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", private)  # only this host sees it


def start_command(request: socket.socket) -> int | None:
    """Run the command a client sent on this host; its pid, or None for a garbled request."""
    try:
        message, fds, _, _ = socket.recv_fds(request, 65536, 3)
        command = json.loads(message)["command"]
    except (OSError, ValueError, KeyError):
        return None
    if len(fds) != 3:
        return None
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
            for fd in set(fds) - {0, 1, 2}:
                os.close(fd)  # everything else this process holds is close-on-exec
            os.chdir("/")
            os.execve("/bin/sh", ["sh", "-c", command], LOGIN_ENVIRONMENT)
        finally:
            os._exit(127)
    for fd in fds:
        os.close(fd)
    return pid


def exit_status(status: int) -> int:
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main() -> None:
    hostname, hosts_file, private, socket_path, lifeline = sys.argv[1:5] + [int(sys.argv[5])]
    os.set_inheritable(lifeline, False)  # the session's alone: no command of this host may hold it
    become_host(hostname, hosts_file, private)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(socket_path)
    server.listen(64)
    with open(os.path.join(private, ".ready"), "w") as marker:
        marker.write(hostname)
    clients: dict[int, socket.socket] = {}  # pid of a command -> the client waiting for its status
    while True:
        readable, _, _ = select.select([lifeline, server], [], [], TICK_SECONDS)
        if lifeline in readable and not os.read(lifeline, 1):
            return  # the session is gone
        if server in readable:
            request, _ = server.accept()
            pid = start_command(request)
            if pid is None:
                request.close()
            else:
                clients[pid] = request
        try:
            while (reaped := os.waitpid(-1, os.WNOHANG))[0]:
                client = clients.pop(reaped[0], None)
                if client is not None:
                    try:
                        client.send(str(exit_status(reaped[1])).encode())
                    except OSError:
                        pass  # the client went away: its command ran on, as over ssh without a tty
                    client.close()
        except ChildProcessError:
            pass


if __name__ == "__main__":
    main()
