"""The lab itself, without the daemon: the firewall is real, and FTP data is blocked."""
import subprocess

import pytest

import lab

FAMILIES = [6, 4]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("port", [lab.VSFTPD, lab.PYFTPD, lab.HOSTILE])
def test_control_port_reachable(family, port):
    r = lab.tcp_probe(lab.CLIENT_NS, lab.SERVER[family], port)
    assert r.startswith("ok 220"), r


@pytest.mark.parametrize("family", FAMILIES)
def test_gateway_drops_new_connection_without_hole(family):
    before = lab.drop_counter()
    # Nothing listens on 50000 now: a refusal would mean the SYN got through.
    assert lab.tcp_probe(lab.CLIENT_NS, lab.SERVER[family], 50000) == "timeout"
    # The probe listener is alive (reachable from the gateway itself, no forwarding),
    # yet the client cannot reach it: dropped by policy.
    assert lab.tcp_probe(lab.GW_NS, lab.SERVER[family], lab.PROBE_PORT).startswith("ok")
    assert lab.tcp_probe(lab.CLIENT_NS, lab.SERVER[family], lab.PROBE_PORT) == "timeout"
    assert lab.drop_counter() > before


@pytest.mark.parametrize("family", FAMILIES)
def test_set_element_opens_exactly_that_hole(family):
    """What the daemon relies on: an element `client . server . port` admits that one flow."""
    c, s, p = lab.CLIENT[family], lab.SERVER[family], lab.PROBE_PORT
    assert lab.all_elements() == set()
    try:
        lab.add_element(family, c, s, p, 30)
        assert (c, s, p) in lab.set_elements(family)
        seen = len(lab.probe_connections())
        assert lab.tcp_probe(lab.CLIENT_NS, s, p).startswith("ok")
        assert lab.wait_until(lambda: len(lab.probe_connections()) > seen, 5)
        assert lab.probe_connections()[-1].split()[0] == c
        # Other ports and the reverse direction stay closed.
        assert lab.tcp_probe(lab.CLIENT_NS, s, 50000) == "timeout"
        assert lab.tcp_probe(lab.SERVER_NS, c, p) == "timeout"
    finally:
        lab.delete_element(family, c, s, p)
    assert lab.set_elements(family) == set()


def test_element_times_out():
    c, s = lab.CLIENT[6], lab.SERVER[6]
    lab.add_element(6, c, s, 50998, 1)
    assert lab.wait_until(lambda: lab.set_elements(6) == set(), 15)


@pytest.mark.parametrize("family", FAMILIES)
def test_third_host_recorder_works(family):
    before = len(lab.third_connections())
    # From the gateway itself (not forwarded), so the recorder can be trusted when it is silent.
    assert lab.tcp_probe(lab.GW_NS, lab.THIRD[family], 50509).startswith("ok")
    assert lab.wait_until(lambda: len(lab.third_connections()) > before, 5)
    # The client cannot reach it through the gateway.
    assert lab.tcp_probe(lab.CLIENT_NS, lab.THIRD[family], 50509) == "timeout"


def test_no_conntrack_helper_and_queue_rules():
    ruleset = lab.in_ns(lab.GW_NS, "nft", "list", "ruleset", check=True).stdout
    assert "ct helper" not in ruleset
    for ipt in ("iptables-save", "ip6tables-save"):
        rules = lab.in_ns(lab.GW_NS, ipt, "-t", "mangle", check=True).stdout
        for d in ("--dports", "--sports"):
            assert f"-m multiport {d} 21,2121,2122 -j NFQUEUE --queue-num 10004 --queue-bypass" in rules
    r = lab.in_ns(lab.GW_NS, "cat", "/proc/sys/net/netfilter/nf_conntrack_helper")
    assert r.returncode != 0 or r.stdout.strip() == "0"


# Without the daemon, control packets bypass the queue but no data connection can open.
NO_DAEMON = [(6, "epsv"), (4, "pasv"), (4, "epsv"), (6, "eprt"), (4, "port")]


@pytest.mark.parametrize("family,mode", NO_DAEMON, ids=[f"v{f}-{m}" for f, m in NO_DAEMON])
def test_transfer_fails_without_daemon(family, mode, tmp_path):
    assert not lab.queue_bound(), "a daemon is bound to the queue: this test needs none"
    out = tmp_path / "hello.txt"
    r = lab.curl(family, lab.VSFTPD, "hello.txt", mode, "-o", out, max_time=10, connect_timeout=3)
    assert r.returncode != 0, r.stderr
    assert "< 220" in r.stderr, "control connection must work:\n" + r.stderr
    assert f"> {lab.MODE_CMD[mode]}" in r.stderr
    assert not out.exists() or out.stat().st_size == 0


def test_lftp_fails_without_daemon(tmp_path):
    assert not lab.queue_bound()
    r = lab.lftp(6, lab.PYFTPD, "epsv", [f"get hello.txt -o {tmp_path}/h"], max_time=15)
    assert r.returncode != 0
    assert not (tmp_path / "h").exists() or (tmp_path / "h").stat().st_size == 0
