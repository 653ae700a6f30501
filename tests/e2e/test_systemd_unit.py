"""rc.d/ftp6proxy.service's command line, run in the lab as systemd would run it.

ExecStart is read from the unit, its variables expanded the way systemd does (${X} one
word, $X split at white space; the defaults from its Environment= lines, overridden with
the lab's values as /etc/default/ftp6proxy would), %t pointed at a scratch runtime
directory, /usr/sbin/ftp6proxy replaced by $FTP6PROXY_BIN. The daemon runs under setpriv
with exactly the unit's CapabilityBoundingSet (plus CAP_SYS_ADMIN, which the unit's comment
says -j needs) and no_new_privs, as NoNewPrivileges= gives it. Then passive and active
transfers must pass the gateway, and SIGTERM must end it with status 0."""
import os
import re
import shlex
import shutil
import signal
import subprocess

import lab

UNIT = lab.REPO / "rc.d" / "ftp6proxy.service"
LAB_ENV = {
    "FTP6PROXY_QUEUE": str(lab.QUEUE),
    "FTP6PROXY_FTP_PORTS": "21,2121,2122",
    "FTP6PROXY_NFT_TABLE": " ".join(lab.TABLE),
    "FTP6PROXY_OPTS": f"-j {lab.GW_NS} -t 2",
}


def unit_lines(key):
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines()
            if line.startswith(key + "=")]


def unit_env():
    env = {}
    for value in unit_lines("Environment"):
        name, _, val = shlex.split(value)[0].partition("=")
        env[name] = val
    return env


def expand(cmdline, env, runtime):
    """systemd.service(5) "Command lines": ${X} is one word, $X is split at white space."""
    words = []
    for word in shlex.split(cmdline.replace("%t", str(runtime))):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            words.extend(env[whole.group(1)].split())
            continue
        words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env[m.group(1)], word))
    return words


def test_unit_command_line_runs_the_lab(tmp_path):
    assert shutil.which("setpriv"), "setpriv (util-linux) is needed to apply the unit's capabilities"
    (exec_start,) = unit_lines("ExecStart")
    env = {**unit_env(), **LAB_ENV}
    runtime = tmp_path / "run"
    (runtime / "ftp6proxy").mkdir(parents=True)  # RuntimeDirectory=ftp6proxy
    argv = expand(exec_start, env, runtime)
    assert argv[0] == "/usr/sbin/ftp6proxy", argv
    assert "-d" in argv and "-d" not in argv[argv.index("-d") + 1:], \
        "the unit must run in the foreground with syslog logging (-d once, not -d -d)"
    argv[0] = str(lab.daemon_binary())
    (bounding,) = unit_lines("CapabilityBoundingSet")
    caps = [c.lower().removeprefix("cap_") for c in bounding.split()] + ["sys_admin"]
    assert set(caps) >= {"net_admin", "setuid", "setgid", "sys_chroot", "kill"}, caps
    spec = ",".join(["-all"] + ["+" + c for c in caps])
    cmd = ["setpriv", "--bounding-set", spec, "--inh-caps", "-all", "--no-new-privs", *argv]
    log = (tmp_path / "daemon.log").open("a")

    def start():
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        assert lab.wait_until(lab.queue_bound, 15) or proc.poll() is not None
        assert proc.poll() is None, \
            f"{shlex.join(cmd)} exited {proc.returncode}: {(tmp_path / 'daemon.log').read_text()}"
        return proc

    def stop(proc):
        # KillMode=mixed: SIGTERM to the main process only; it stops its children.
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=20)
        assert status == 0, \
            f"exit status {status} after SIGTERM: {(tmp_path / 'daemon.log').read_text()}"

    proc = start()
    try:
        for family, mode in [(6, "epsv"), (4, "port"), (4, "pasv"), (6, "eprt")]:
            r = lab.curl(family, lab.VSFTPD, "hello.txt", mode)
            assert r.returncode == 0, f"{family}/{mode} through the unit's daemon: {r.stderr[-2000:]}"
            assert "hello from the ftp6proxy lab" in r.stdout
        # systemctl restart: -i keeps a pidfile in the foreground, so the stopping instance
        # hands its connections to the next one, whose first EPSV on them is helped.
        pidfile = runtime / "ftp6proxy" / "ftp6proxy.pid"
        assert pidfile.read_text().strip() == str(proc.pid), "the pidfile names the daemon"
        c, s = lab.CLIENT[6], lab.SERVER[6]
        with lab.Bridge(6, lab.VSFTPD) as b:
            b.login()
            assert b.cmd("TYPE I").startswith("200")
            stop(proc)
            state = runtime / "ftp6proxy" / "ftp6proxy.state"
            assert state.exists() and state.stat().st_size > 0, "no hand-over written"
            proc = start()
            port = lab.parse_229(b.cmd("EPSV"))
            assert (c, s, port) in lab.set_elements(6), "first EPSV after the restart"
    finally:
        if proc.poll() is None:
            stop(proc)
    assert lab.wait_until(lambda: not lab.all_elements(), 7)
