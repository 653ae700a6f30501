"""Fixtures for ftp6proxy's end-to-end tests (run as root: python3 -m pytest -v tests/e2e)."""
import atexit
import fcntl
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "daemon_timeout(seconds): -t for the daemon fixture")


@pytest.fixture(scope="session", autouse=True)
def lab_net():
    """The namespace lab, up for the whole session and ALWAYS torn down at the end."""
    if os.geteuid() != 0:
        pytest.exit("the end-to-end tests need root (network namespaces, nft)", returncode=2)
    # One lab per machine: its namespaces have fixed names, so a second run (the demo, the
    # capture maker, another test session) waits for this one instead of tearing its lab
    # down under it.
    lock = open(lab.LOCK_PATH, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"\nwaiting for the lab lock {lab.LOCK_PATH} (another lab user runs)", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    atexit.register(lab.lab_down)
    lab.lab_down()  # leftovers from an interrupted run
    try:
        lab.lab_up()
        yield
    finally:
        lab.lab_down()


def run_lab_daemon(request, tmp_path, copy=False):
    """The body of the daemon fixtures: start, yield the Daemon, stop and check."""
    marker = request.node.get_closest_marker("daemon_timeout")
    timeout_s = marker.args[0] if marker else 2
    d = lab.Daemon(tmp_path / "ftp6proxy.log", copy=copy)
    request.node.f6p_daemon = d
    binary = lab.daemon_binary()
    if not binary.is_file():
        request.node.f6p_missing = (
            f"ftp6proxy binary not found at {binary}: this test needs the daemon. "
            "Build it with `cargo build` or point FTP6PROXY_BIN at it.")
        yield None
        return
    atexit.register(lambda: d.running() and d.proc.kill())
    d.start(timeout_s)
    yield d
    if d.running():
        status = d.stop()
        assert status == 0, f"ftp6proxy exit status {status} after SIGTERM (want 0)"
    # A stop cuts no hole short: live holes expire by their own timeouts, at most -t.
    assert lab.wait_until(lambda: not lab.all_elements(), timeout_s + 5), \
        f"hole sets not empty {timeout_s + 5}s after the daemon stopped: {lab.all_elements()}"


@pytest.fixture
def daemon(request, tmp_path):
    """ftp6proxy started in the gateway namespace (-d -d -j f6p-gw ... -t 2).

    Teardown: SIGTERM, exit status 0, both hole sets empty within -t (a stop leaves live
    holes to their own timeouts). If the binary is missing the
    test FAILS (see pytest_runtest_call below) rather than erroring or skipping."""
    yield from run_lab_daemon(request, tmp_path)


@pytest.fixture
def copy_mode():
    """The gateway copies control packets to NFLOG group lab.QUEUE (lab.NflogFeed), and
    hole checks allow for copy mode's race (lab.HOLE_SETTLE), for one test."""
    old = lab.HOLE_SETTLE
    lab.HOLE_SETTLE = 0.5
    try:
        with lab.NflogFeed():
            yield
    finally:
        lab.HOLE_SETTLE = old


@pytest.fixture
def copy_daemon(request, tmp_path, copy_mode):
    """As `daemon`, in copy mode: --intercept nflog on the copies lab.NflogFeed makes."""
    yield from run_lab_daemon(request, tmp_path, copy=True)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    msg = getattr(item, "f6p_missing", None)
    if msg:
        pytest.fail(msg, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    d = getattr(item, "f6p_daemon", None)
    if rep.failed and d is not None and d.log_path.exists():
        text = d.log()
        if len(text) > 20000:
            text = "...\n" + text[-20000:]
        rep.sections.append((f"ftp6proxy log ({d.log_path})", text))
