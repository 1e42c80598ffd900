"""The bed's stand-in for rsh/ssh: `python rsh.py BED_FOLDER HOST COMMAND...` runs COMMAND on HOST.

HOST is a bed host's name or address. The command goes to that host's process 1 (`host_init.py`), over
its socket in the bed's folder, with this process's stdin, stdout and stderr; this process exits with
the command's status, or 255 when the host cannot be reached, as ssh does. hydra uses it with
`-launcher rsh -launcher-exec BED_FOLDER/rsh`. The command's own traffic crosses the bed's network;
only this control path does not, so a cut link stops a job's TCP connections as it would over ssh.
"""

import json
import socket
import sys
from pathlib import Path

CONNECT_SECONDS = 10


def host_name(folder: Path, host: str) -> str | None:
    for line in (folder / "hosts").read_text().splitlines():
        ip, *names = line.split()
        if host == ip or host in names:
            return names[0] if names and names[0] != "localhost" else None
    return None


def main() -> int:
    folder, host, command = Path(sys.argv[1]), sys.argv[2], " ".join(sys.argv[3:])
    name = host_name(folder, host)
    if name is None:
        print(f"rsh: {host}: no such host on this bed", file=sys.stderr)
        return 255
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(CONNECT_SECONDS)
        try:
            conn.connect(str(folder / f"{name}.sock"))
            socket.send_fds(conn, [json.dumps({"command": command}).encode()], [0, 1, 2])
            conn.settimeout(None)  # the command may run for as long as it likes
            status = conn.recv(16)
        except OSError as exc:
            print(f"rsh: {host}: {exc}", file=sys.stderr)
            return 255
    return int(status) if status else 255


if __name__ == "__main__":
    sys.exit(main())
