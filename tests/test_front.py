"""The command server: ``qpy`` (qpy/front.py) hands commands to a running master.

The front speaks ``multiprocessing.connection``'s framing and key challenge itself, so
it is checked against the real thing; a command it sends runs in the master with the
client's directory, environment and exit status; and the client imports neither click
nor multiprocessing on that path."""

from __future__ import annotations

import os
import subprocess
import threading
from multiprocessing.connection import Listener, answer_challenge, deliver_challenge

import pytest
from conftest import QPY, start_daemons

from qpy import front, paths, wire


@pytest.mark.parametrize("first", [b"{", b"x"])
def test_the_handshake_is_the_one_of_multiprocessing(tmp_path, monkeypatch, first):
    """Both directions, also when the 20 random bytes of a challenge start with '{'
    (which once looked like a Python 3.12 digest name)."""
    real = os.urandom
    monkeypatch.setattr(os, "urandom", lambda n: first + real(n - 1))
    key = paths.new_key().encode()
    path = str(tmp_path / "sock")
    listener = Listener(path, family="AF_UNIX")
    seen: list[object] = []

    def serve() -> None:
        conn = listener.accept()
        seen.append(wire.decode(conn.recv_bytes()))
        deliver_challenge(conn, key)
        answer_challenge(conn, key)
        seen.append(conn.recv_bytes())
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    conn = front._Conn(path)
    conn.send_bytes(front._dumps({"v": 1, "type": "hello", "user": "me"}).encode())
    front._answer(conn, key)
    front._deliver(conn, key)
    conn.send_bytes(b"after")
    thread.join(10)
    listener.close()
    assert seen == [{"v": 1, "type": "hello", "user": "me"}, b"after"]


def test_a_wrong_key_is_refused_both_ways(tmp_path):
    path = str(tmp_path / "sock")
    listener = Listener(path, family="AF_UNIX")
    errors: list[Exception] = []

    def serve() -> None:
        conn = listener.accept()
        conn.recv_bytes()
        try:
            deliver_challenge(conn, b"the master's key")
        except Exception as exc:  # AuthenticationError
            errors.append(exc)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    conn = front._Conn(path)
    conn.send_bytes(b'{"v":1,"type":"hello","user":"me"}')
    with pytest.raises(front.Unserved):
        front._answer(conn, b"another key")
    thread.join(10)
    listener.close()
    assert errors


def test_a_served_command_imports_neither_click_nor_multiprocessing(qpy):
    start_daemons(qpy)
    job = qpy.sub("true")
    proc = subprocess.run([os.path.join(os.path.dirname(QPY), "python"), "-X", "importtime",
                           QPY, "check", str(job)], cwd=qpy.work, env=qpy.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"{job} (" in proc.stdout
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "qpy.front" in imported
    assert not {"click", "multiprocessing", "multiprocessing.connection", "json"} & imported


def test_a_served_command_uses_the_clients_directory_and_environment(qpy):
    start_daemons(qpy)
    where = qpy.work / "sub dir"
    where.mkdir()
    env = {**qpy.env, "QPY_FRONT_TEST": "from the client"}
    out = qpy.run("sub", 'echo "$QPY_FRONT_TEST"; pwd', cwd=where, env=env).stdout
    job = int(out.split()[1])
    qpy.wait_status(job, "done")
    assert (where / f"job_{job}.out").read_text() == f"from the client\n{where}\n"
    # and the exit status of a refusal comes back as it is
    proc = qpy.run("kill", "424242", check=False, cwd=where)
    assert proc.returncode == 3 and proc.stderr.startswith("qpy: Nothing to do")


def test_ctrl_c_while_the_master_has_the_command_ends_it_as_the_full_command_line_does(qpy):
    """Ctrl-C while ``qpy`` waits for its master (here a stopped one) ends it with
    click's ``Aborted!`` and exit status 1, not a Python traceback."""
    import signal

    import psutil
    from conftest import wait_for

    master, _ = start_daemons(qpy)
    os.kill(master, signal.SIGSTOP)
    try:
        proc = subprocess.Popen([QPY, "check"], cwd=qpy.work, env=qpy.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: psutil.Process(proc.pid).net_connections(kind="unix"),
                 what="qpy connected to its master's socket")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        os.kill(master, signal.SIGCONT)
    assert (proc.returncode, out, err) == (1, "", "\nAborted!\n")
