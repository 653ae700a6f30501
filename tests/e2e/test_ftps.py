"""FTPS through the gateway (ARCHITECTURE.md "FTPS and CCC"), against the lab's
ftps_ccc_server.py on port 2123 with real clients: Python's ftplib.FTP_TLS (AUTH TLS,
ccc() exchanges close_notify both ways) and curl --ftp-ssl-ccc (AUTH SSL; in its default
passive CCC mode it sends no close_notify of its own, in active mode it does).

- With the daemon, a session that leaves TLS with CCC gets its data connection helped:
  passive (EPSV on IPv6, PASV on IPv4) and active (EPRT on IPv6, PORT on IPv4); the
  download's sha256 matches, and the daemon's log shows the TLS line, clear text resuming
  in both directions, and the very hole the clear-text announcement asked for.
- With the daemon, a session that never leaves TLS gets no hole: the transfer fails
  (policy drop at the gateway) and the log has exactly one "tls client=... server=..."
  line naming both endpoints.
- Without the daemon, the same CCC sessions fail: the holes above are the daemon's work.

The server's own log (STATE/ftps.log) ends each session with a line
`end user=NAME tls=... ccc=close_notify|cleartext|none prot=P|C transfers=N`; every test
uses a fresh user name to find its session there and checks what the client did on the
wire. curl 7.88.1 (Debian 12) cannot do active mode with PROT P (curl issue #10666: it
never starts TLS on the accepted data connection), so its PORT/EPRT cases use
--ftp-ssl-control, which sends PROT C: TLS for the control connection only. (The
"passive"/"active" in curl's case names below is its --ftp-ssl-ccc-mode.)
"""
import re
import uuid

import pytest

import lab

HELPER = lab.HELPER.parent / "ftps_client.py"
FILE = "ccc.bin"
C, S = lab.CLIENT, lab.SERVER
SERVER_LOG = lab.STATE / "ftps.log"
PASSIVE_FOR = {6: "epsv", 4: "pasv"}
ACTIVE_FOR = {6: "eprt", 4: "port"}
# What the client sends for PROT P (TLS data connections) or PROT C (clear ones).
CURL_PROT = {"P": ["--ssl-reqd"], "C": ["--ftp-ssl-control"]}


# ------------------------------------------------------------------ clients

def ftplib_get(family, mode, user, out, *flags, timeout=8):
    """ftps_client.py in the client namespace: AUTH TLS, login, PBSZ/PROT, CCC (unless
    --no-ccc in flags), RETR ccc.bin with mode. Trace (commands and replies) on stdout."""
    r = lab.in_ns(lab.CLIENT_NS, lab.PY, HELPER, "--host", S[family], "--port", lab.FTPS,
                  "--mode", mode, "--cafile", lab.FTPS_CERT, "--user", user,
                  "--timeout", timeout, *flags, f"get:{FILE}:{out}", timeout=timeout * 6 + 30)
    r.trace = r.stdout + r.stderr
    return r


def curl_get(family, mode, user, out, *extra, max_time=30):
    """curl in the client namespace, verifying the server's certificate; -v trace."""
    r = lab.curl(family, lab.FTPS, FILE, mode, "--cacert", lab.FTPS_CERT,
                 "--user", f"{user}:lab@example.com", "-o", out, *extra, max_time=max_time)
    r.trace = r.stderr
    return r


def curl_ccc_args(ccc_mode, prot, tls_max=None):
    args = [*CURL_PROT[prot], "--ftp-ssl-ccc", "--ftp-ssl-ccc-mode", ccc_mode]
    return args + (["--tls-max", tls_max] if tls_max else [])


def new_user(what):
    return f"{what}-{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------ traces and logs

# A command as each client's trace shows it, and a reply.
SENT = {"ftplib": lambda cmd: rf"^\*cmd\* '{cmd}\b", "curl": lambda cmd: rf"^> {cmd}\b"}
GOT = {"ftplib": lambda code: rf"^\*resp\* '{code}\b", "curl": lambda code: rf"^< {code}\b"}


def trace_pos(client, trace, pattern_of, what):
    m = re.search(pattern_of[client](what), trace, re.M)
    return m.start() if m else None


def check_ccc_trace(client, trace, mode):
    """The client authenticated, sent CCC, got 200, and only then its data command."""
    auth = "AUTH TLS" if client == "ftplib" else "AUTH SSL"
    assert trace_pos(client, trace, SENT, auth) is not None, f"no {auth}:\n{trace[-4000:]}"
    assert trace_pos(client, trace, GOT, "234") is not None, f"no 234:\n{trace[-4000:]}"
    ccc = trace_pos(client, trace, SENT, "CCC")
    assert ccc is not None, f"{client} sent no CCC:\n{trace[-4000:]}"
    m = re.compile(GOT[client]("200"), re.M).search(trace, ccc)
    assert m, f"CCC not answered with 200:\n{trace[-4000:]}"
    data = re.compile(SENT[client](lab.MODE_CMD[mode]), re.M).search(trace, m.end())
    assert data, f"no {lab.MODE_CMD[mode]} after CCC:\n{trace[-4000:]}"


def announced_port(trace, mode):
    """The port of the last data connection announcement in a client trace."""
    if mode == "epsv":
        found = re.findall(r"\(\|\|\|(\d+)\|\)", trace)
    elif mode == "pasv":
        found = [str(lab.parse_227(m)[1])
                 for m in re.findall(r"227 [^(\n]*\([\d,]+\)", trace)]
    elif mode == "eprt":
        found = re.findall(r"EPRT \|\d\|[^|]+\|(\d+)\|", trace)
    else:
        found = [str(int(a) * 256 + int(b))
                 for a, b in re.findall(r"PORT \d+,\d+,\d+,\d+,(\d+),(\d+)", trace)]
    assert found, f"no {mode} announcement in the trace:\n{trace[-4000:]}"
    return int(found[-1])


def sockaddr(family, addr, port):
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"


def tls_lines(text, family):
    """The daemon's "tls client=... server=..." lines for this lab's client and server."""
    client = re.escape(sockaddr(family, C[family], "")) + r"\d+"
    server = re.escape(sockaddr(family, S[family], lab.FTPS))
    return re.findall(rf"\btls client={client} server={server}\b.*", text)


def hole_line(family, mode, port):
    if mode in ("epsv", "pasv"):
        kind, src, dst = "passive", C[family], sockaddr(family, S[family], port)
    else:
        kind, src, dst = "active", S[family], sockaddr(family, C[family], port)
    return re.compile(rf"hole open slot=\d+ mode={kind} from={re.escape(src)} "
                      rf"to={re.escape(dst)}\b")


def server_session(user, within=10):
    """The server's end-of-session line for user, as a dict (waits for the session to end)."""
    pat = re.compile(rf"\bend user={re.escape(user)} (.*)$", re.M)

    def find():
        m = pat.search(SERVER_LOG.read_text(errors="replace")) if SERVER_LOG.exists() else None
        return m and dict(kv.split("=", 1) for kv in m.group(1).split())
    found = lab.wait_until(find, within)
    assert found, f"no session of user {user} in {SERVER_LOG}"
    return found


def server_lines(user):
    """The server's log lines of the session that logged in as user."""
    text = SERVER_LOG.read_text(errors="replace")
    m = re.search(rf"^\S+ (\S+) -> USER {re.escape(user)}$", text, re.M)
    assert m, f"user {user} not in {SERVER_LOG}"
    return [ln for ln in text.splitlines() if ln.split(" ", 2)[1:2] == [m.group(1)]]


@pytest.fixture(scope="module")
def ccc_sha():
    return lab.sha256_file(lab.FTPS_ROOT / FILE)


# ------------------------------------------------------------------ CCC, with the daemon

CCC_CASES = [
    # client, family, mode, what: for ftplib the TLS version cap, for curl "ccc-mode/PROT"
    ("ftplib", 6, "epsv", "tls1.3"),
    ("ftplib", 6, "eprt", "tls1.3"),
    ("ftplib", 4, "pasv", "tls1.3"),
    ("ftplib", 4, "port", "tls1.3"),
    ("ftplib", 6, "epsv", "tls1.2"),
    ("ftplib", 4, "port", "tls1.2"),
    ("curl", 6, "epsv", "passive/P"),
    ("curl", 6, "eprt", "passive/C"),
    ("curl", 4, "pasv", "passive/P"),
    ("curl", 4, "port", "passive/C"),
    ("curl", 6, "epsv", "active/P"),
    ("curl", 4, "port", "active/C"),
    ("curl", 4, "pasv", "passive/P/tls1.2"),
]


def run_ccc_session(client, family, mode, what, user, out):
    """Returns (result, expected server summary fields)."""
    if client == "ftplib":
        flags = ["--tls-max", "1.2"] if what == "tls1.2" else []
        return ftplib_get(family, mode, user, out, *flags), {"ccc": "close_notify", "prot": "P"}
    ccc_mode, prot, *tls = what.split("/")
    tls_max = tls[0].removeprefix("tls") if tls else None
    r = curl_get(family, mode, user, out, *curl_ccc_args(ccc_mode, prot, tls_max))
    # Passive CCC mode: curl waits for the server's close_notify and sends none.
    return r, {"ccc": "cleartext" if ccc_mode == "passive" else "close_notify", "prot": prot}


@pytest.mark.parametrize("client,family,mode,what", CCC_CASES,
                         ids=[f"{c}-v{f}-{m}-{w.replace('/', '-')}" for c, f, m, w in CCC_CASES])
def test_ccc_session_gets_its_hole(daemon, client, family, mode, what, tmp_path, ccc_sha):
    mark = daemon.log_mark()
    user = new_user(f"{client}-v{family}-{mode}")
    out = tmp_path / FILE
    r, want = run_ccc_session(client, family, mode, what, user, out)
    assert r.returncode == 0, f"{client} failed with the daemon running:\n{r.trace[-4000:]}"
    check_ccc_trace(client, r.trace, mode)
    assert lab.sha256_file(out) == ccc_sha

    log = daemon.log_since(mark)
    assert len(tls_lines(log, family)) == 1, f"want one tls line:\n{log}"
    for d in ("client", "server"):
        assert f"cleartext dir={d}" in log, f"no clear text seen from the {d}:\n{log}"
    hole = hole_line(family, mode, announced_port(r.trace, mode))
    assert hole.search(log), f"no line matching {hole.pattern!r} in the daemon's log:\n{log}"

    session = server_session(user)
    assert session["ccc"] == want["ccc"], session
    assert session["prot"] == want["prot"], session
    assert session["transfers"] == "1", session
    if what.endswith("tls1.2"):
        assert session["tls"] == "TLSv1.2", session


# ------------------------------------------------------------------ never leaves TLS

TLS_ONLY_CASES = [
    ("ftplib", 6, "epsv"),
    ("ftplib", 4, "pasv"),
    ("ftplib", 6, "eprt"),
    ("ftplib", 4, "port"),
    ("curl", 6, "epsv"),
    ("curl", 4, "port"),
]


@pytest.mark.parametrize("client,family,mode", TLS_ONLY_CASES,
                         ids=[f"{c}-v{f}-{m}" for c, f, m in TLS_ONLY_CASES])
def test_session_that_stays_in_tls_gets_no_hole(daemon, client, family, mode, tmp_path):
    """PROT C, so that the data connection itself is plain TCP: nothing but the
    missing hole can stop it."""
    mark = daemon.log_mark()
    dropped = lab.drop_counter()
    user = new_user(f"tls-{client}-v{family}-{mode}")
    out = tmp_path / FILE
    if client == "ftplib":
        r = ftplib_get(family, mode, user, out, "--no-ccc", "--prot", "C", timeout=5)
    else:
        r = curl_get(family, mode, user, out, *CURL_PROT["C"], max_time=15)
    assert r.returncode != 0, f"the transfer got through without a hole:\n{r.trace[-4000:]}"
    assert trace_pos(client, r.trace, SENT, lab.MODE_CMD[mode]) is not None, r.trace[-4000:]
    assert trace_pos(client, r.trace, SENT, "CCC") is None
    assert not out.exists() or out.stat().st_size == 0

    session = server_session(user, within=20)
    assert session["tls"].startswith("TLS") and session["ccc"] == "none", session
    assert session["transfers"] == "0", session
    if mode in ("eprt", "port"):
        # The server's connect to the client timed out: dropped at the gateway.
        failed = [ln for ln in server_lines(user) if "data connection failed" in ln]
        assert failed and "TimeoutError" in failed[0], server_lines(user)
    assert lab.drop_counter() > dropped, "the gateway dropped nothing"

    log = daemon.log_since(mark)
    lines = tls_lines(log, family)
    assert len(lines) == 1, f"want exactly one tls line naming both endpoints:\n{log}"
    assert "hole open" not in log, log
    assert "cleartext" not in log, log
    assert lab.all_elements() == set()


# ------------------------------------------------------------------ without the daemon

NO_DAEMON_CASES = [
    ("ftplib", 6, "epsv"),
    ("ftplib", 4, "port"),
    ("curl", 4, "pasv"),
    ("curl", 6, "eprt"),
]


@pytest.mark.parametrize("client,family,mode", NO_DAEMON_CASES,
                         ids=[f"{c}-v{f}-{m}" for c, f, m in NO_DAEMON_CASES])
def test_ccc_session_fails_without_daemon(client, family, mode, tmp_path):
    assert not lab.queue_bound(), "a daemon is bound to the queue: this test needs none"
    user = new_user(f"nod-{client}-v{family}-{mode}")
    out = tmp_path / FILE
    if client == "ftplib":
        r = ftplib_get(family, mode, user, out, "--prot", "C", timeout=5)
    else:
        r = curl_get(family, mode, user, out, *curl_ccc_args("passive", "C"), max_time=15)
    assert r.returncode != 0, f"the transfer got through without the daemon:\n{r.trace[-4000:]}"
    check_ccc_trace(client, r.trace, mode)
    assert not out.exists() or out.stat().st_size == 0
    session = server_session(user, within=20)
    assert session["ccc"] in ("close_notify", "cleartext") and session["transfers"] == "0", session
