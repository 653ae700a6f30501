"""With the daemon: real transfers through the gateway, three clients x two servers x
IPv6/IPv4 x active/passive (PORT, EPRT, PASV, EPSV): listing, download (20 MB, sha256),
upload. Each case also checks the client really used the intended command."""
import os
import re
import uuid

import pytest

import lab

SERVERS = {"vsftpd": lab.VSFTPD, "pyftpdlib": lab.PYFTPD}
MODES = [(6, "epsv"), (6, "eprt"), (4, "pasv"), (4, "epsv"), (4, "port"), (4, "eprt")]
TRACE = {
    "curl": lambda cmd: re.compile(rf"^> {cmd}\b", re.M),
    "lftp": lambda cmd: re.compile(rf"---> {cmd}\b"),
    "ftplib": lambda cmd: re.compile(rf"\*cmd\* '{cmd}\b"),
}


def cases():
    for client in ("curl", "lftp", "ftplib"):
        for server in SERVERS:
            for family, mode in MODES:
                if client == "lftp" and (family, mode) == (4, "eprt"):
                    continue  # lftp always sends PORT on IPv4
                yield pytest.param(client, server, family, mode,
                                   id=f"{client}-{server}-v{family}-{mode}")


@pytest.fixture(scope="module")
def big_sha():
    return lab.sha256_file(lab.SERVER_ROOT[lab.VSFTPD] / lab.BIG)


def check_trace(client, mode, text):
    assert TRACE[client](lab.MODE_CMD[mode]).search(text), \
        f"{client} did not use {lab.MODE_CMD[mode]}:\n{text[-3000:]}"


@pytest.mark.parametrize("client,server,family,mode", list(cases()))
def test_transfer(daemon, client, server, family, mode, tmp_path, big_sha):
    port = SERVERS[server]
    name = f"{client}-{server}-v{family}-{mode}-{uuid.uuid4().hex[:8]}.bin"
    up = tmp_path / "up.bin"
    up.write_bytes(os.urandom(300_000))
    got = tmp_path / "big.bin"

    if client == "curl":
        r = lab.curl(family, port, "", mode)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "hello.txt" in r.stdout and lab.BIG in r.stdout
        check_trace(client, mode, r.stderr)
        r = lab.curl(family, port, lab.BIG, mode, "-o", got)
        assert r.returncode == 0, r.stderr[-3000:]
        r = lab.curl(family, port, f"incoming/{name}", mode, "-T", up)
        assert r.returncode == 0, r.stderr[-3000:]
        check_trace(client, mode, r.stderr)
    elif client == "lftp":
        r = lab.lftp(family, port, mode, ["ls", f"get {lab.BIG} -o {got}",
                                          f"put {up} -o incoming/{name}"])
        assert r.returncode == 0, r.stderr[-3000:]
        assert "hello.txt" in r.stdout and lab.BIG in r.stdout
        check_trace(client, mode, r.stderr)
    else:
        r = lab.ftplib_transfer(family, port, mode, "list", f"get:{lab.BIG}:{got}",
                                f"put:{up}:incoming/{name}")
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        assert "hello.txt" in r.stdout and lab.BIG in r.stdout
        check_trace(client, mode, r.stdout)

    assert lab.sha256_file(got) == big_sha
    stored = lab.SERVER_ROOT[port] / "incoming" / name
    assert stored.exists(), f"upload {name} not on the server"
    assert lab.sha256_file(stored) == lab.sha256_file(up)
