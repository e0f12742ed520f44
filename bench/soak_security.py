"""Soak run of the attacks of issue 11: at least 100,000 fuzzed messages against both
daemons while real users' jobs run (root only: real Unix accounts, tests/multiuser.py).

    sudo .venv/bin/python bench/soak_security.py [--messages N]

A shared cluster (three nodes on this machine) with alice and bob, who use qpy as meant,
and mallory, who attacks. From their own accounts' processes, at the same time:

- alice and bob each fuzz their own master (over its socket, with their own key) and the
  multiuser (with their own key): frames built from ``qpy.wire.SCHEMAS``, with wrong
  types, missing and extra fields, bad versions, huge numbers, NaN, garbage and mangled
  bytes; and unauthenticated garbage at both;
- the admin fuzzes the multiuser with admin frames that read or are refused;
- mallory sends the same fuzz, and the attacks: forged hellos (a million cores, infinite
  memory, thousands of made-up nodes), floods of idle connections with and without her
  key, trickled handshakes, refused hellos for made-up users; the admin removes her and
  admits her again in the middle;
- alice and bob submit real jobs, check them and ask for the status all along (each
  such request must succeed: a failure is a "legitimate request refused"), and the
  admin asks for the status.

Valid requests that would change a user's state (a hello, kill, clean, finish, pause...)
are never sent valid by the fuzzers: as in tests/test_fuzz.py, they are only sent
broken. Every frame on an authenticated connection must get one well-formed reply, and
never an internal error.

It ends with one line, and exits 1 on any loss:

    soak: N messages, 0 daemon exits, 0 legitimate requests refused, 0 jobs lost (...)
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from multiuser import HOLD_PROBE, Cluster, started_cluster  # noqa: E402

# Run as an account: fuzz frames at the multiuser and (for a user) the user's own master.
# The spec (first stdin line): address, mode (user, admin, hostile), counts, seed. Prints
# one JSON line at the end: frames sent, replies that broke the contract (with examples).
WORKER = r"""
import json, math, os, random, socket, struct, sys, time
from qpy import paths, wire
spec = json.loads(sys.stdin.readline())
rng = random.Random(spec["seed"])
mode = spec["mode"]
me = wire.whoami()
home = os.path.expanduser("~/.qpy")
mu_address = tuple(spec["address"])
sent, bad, reconnects = 0, [], 0
ODD = ["", " ", "\0", "all", "queue", "-1", "1-3", "x" * 3000, "(" * 300 + "a" + ")" * 300,
       "not", me, "@admin", "@join:" + me, "root", "\ud83d\ude00", "\udc80"]
BIG = [2**31, 2**53 + 1, 2**63 - 1, 2**63, -2**63 - 1, 2**64, 10**30]
def scalar():
    k = rng.randrange(7)
    return [None, rng.random() < 0.5, rng.randint(-3, 12), rng.choice(BIG),
            rng.choice([float("nan"), float("inf"), -0.0, 1e308, 0.5]), rng.choice(ODD),
            "".join(chr(rng.randrange(32, 0x2ff)) for _ in range(rng.randrange(8)))][k]
def value(depth=0):
    k = rng.randrange(6)
    if depth < 3 and k == 0:
        return [value(depth + 1) for _ in range(rng.randrange(4))]
    if depth < 3 and k == 1:
        return {str(scalar()): value(depth + 1) for _ in range(rng.randrange(4))}
    return scalar()
def valid(spec_text):
    s = spec_text.rstrip("=")
    if s.startswith("?"):
        return None if rng.random() < 0.3 else valid(s[1:])
    if s.startswith("["):
        return [valid(s[1:-1]) for _ in range(rng.randrange(3))]
    return {"int": lambda: rng.randint(-2, 50), "float": lambda: rng.uniform(0.1, 64),
            "str": lambda: rng.choice(ODD), "bool": lambda: rng.random() < 0.5,
            "dict": lambda: {"x": value()}, "list": lambda: [value()],
            "{str}": lambda: {"A": rng.choice(ODD)}}.get(s, value)()
def message(types):
    kind = rng.choice(types)
    msg = {"v": 1, "type": kind}
    for name, s in wire.SCHEMAS[kind].items():
        if not (s.endswith("=") and rng.random() < 0.5):
            msg[name] = valid(s)
    if rng.random() < 0.5:
        msg["id"] = rng.randrange(2**31)
    for _ in range(rng.randrange(4)):
        m = rng.randrange(6)
        if m == 0 and wire.SCHEMAS[kind]:
            msg[rng.choice(sorted(wire.SCHEMAS[kind]))] = value()
        elif m == 1 and msg:
            del msg[rng.choice(sorted(msg))]
        elif m == 2:
            msg[rng.choice(["user", "uid", "admin", str(scalar())])] = value()
        elif m == 3:
            msg["v"] = value()
        elif m == 4:
            msg["type"] = rng.choice([kind.upper(), "bye", "wake", "__class__", str(scalar())])
        else:
            msg["id"] = value()
    return msg
def frame(types):
    k = rng.randrange(10)
    raw = json.dumps(message(types)).encode()
    if k < 6:
        return raw
    if k == 6:
        return os.urandom(rng.randrange(64))
    if k == 7:
        at = rng.randrange(len(raw) + 1)
        return raw[:at] + os.urandom(rng.randrange(1, 8)) + raw[at:]
    if k == 8:
        return raw[:rng.randrange(len(raw) + 1)]
    return b'{"v":1,"type":"check","select":' + b"[" * 5000 + b"]" * 5000 + b"}"
def harmful(raw, harmless):
    # a valid request that would change state is never sent (the fuzzers send it broken)
    try:
        msg = wire.validate(wire.decode(raw))
    except Exception:
        return False
    return not harmless(msg)
def check(reply_raw, raw):
    try:
        reply = json.loads(reply_raw)
    except ValueError:
        bad.append(("not json", raw[:80].decode(errors="replace")))
        return
    if not isinstance(reply, dict) or reply.get("ok") not in (True, False):
        bad.append(("shape", str(reply)[:100]))
    elif reply["ok"] is False and (reply.get("code") == "internal"
                                   or str(reply.get("error", "")).startswith("internal")):
        bad.append(("internal", str(reply.get("error"))[:200], raw[:120].decode(errors="replace")))
def fuzz(connect, types, harmless, count):
    global sent, reconnects
    conn = None
    done = 0
    while done < count:
        if conn is None:
            try:
                conn = connect()
            except Exception:
                reconnects += 1
                time.sleep(0.2)
                continue
        raw = frame(types)
        if harmful(raw, harmless):
            continue
        try:
            conn.send_bytes(raw)
            if not conn.poll(60):
                bad.append(("no reply", raw[:80].decode(errors="replace")))
                conn.close(); conn = None; continue
            check(conn.recv_bytes(wire.MAX_MESSAGE), raw)  # no events: never registered
        except (OSError, EOFError):
            conn.close(); conn = None; reconnects += 1
        done += 1
        sent += 1
    if conn is not None:
        conn.close()
def garbage(address, count):
    global sent
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    for i in range(count):
        try:
            with socket.socket(family) as s:
                s.settimeout(10)
                s.connect(address)
                k = i % 4
                data = [os.urandom(rng.randrange(1, 64)),
                        struct.pack("!i", rng.choice([-1, 0, 2**31 - 1])) + os.urandom(8),
                        (lambda h: struct.pack("!i", len(h)) + h)(json.dumps(
                            {"v": 1, "type": "hello", "user": rng.choice(ODD)}).encode()),
                        struct.pack("!i", 40) + b"{" * 10][k]
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):
                    pass
        except OSError:
            pass
        sent += 1
mu_user = lambda: wire.connect(mu_address, me, paths.read_key(
    os.path.join(home, "multiuser_connection_conn_key")))
MU_TYPES = ["hello", "slots", "status", "admin", "join", "ping", "sub", "check"]
MASTER_TYPES = ["ping", "sub", "check", "kill", "clean", "config", "ctrl", "notes",
                "status", "finish", "hello"]
READS = lambda msg: msg["type"] in ("status", "slots", "admin", "join", "ping", "check")
if mode in ("user", "hostile"):
    if mode == "user":
        master = lambda: wire.connect(os.path.join(home, "master.sock"), me,
                                      paths.read_key(os.path.join(home, "master.key")))
        fuzz(master, MASTER_TYPES, lambda m: m["type"] in ("ping", "check", "status"),
             spec["master"])
        garbage(os.path.join(home, "master.sock"), spec["garbage"] // 2)
    fuzz(mu_user, MU_TYPES, READS, spec["multiuser"])
    garbage(mu_address, spec["garbage"])
else:
    admin_home = os.environ["QPY_ADMIN_HOME"]
    admin = lambda: wire.connect(mu_address, "@admin",
                                 paths.read_key(os.path.join(admin_home, "admin.key")))
    def admin_reads(msg):
        if msg["type"] != "admin":
            return True
        return msg["command"] in ("status", "variables") or msg["command"] not in (
            "finish", "nodes", "distribute", "saveMessages", "adduser", "enrol",
            "removeuser", "__user", "__req_core", "__remove_job")
    fuzz(admin, ["admin", "admin", "status", "hello", "slots"], admin_reads, spec["multiuser"])
    garbage(mu_address, spec["garbage"])
print(json.dumps({"sent": sent, "bad": len(bad), "examples": bad[:5],
                  "reconnects": reconnects}), flush=True)
"""


def run_worker(cluster: Cluster, user: str, spec: dict, results: list) -> None:
    proc = cluster.probe_process(user, WORKER, spec)
    out, _ = proc.communicate(timeout=3600)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    results.append((user, json.loads(lines[-1]) if lines else
                    {"sent": 0, "bad": 1, "examples": [f"worker died ({proc.returncode})"]}))


class Legit:
    """Alice and bob as users: jobs, check, status, all along; the admin's status."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.refused: list[str] = []
        self.jobs: dict[str, list[int]] = {"alice": [], "bob": []}
        self.requests = 0
        self.stop = threading.Event()
        self.dirs = {u: cluster.workdir(u, "soak") for u in self.jobs}

    def run(self, user: str) -> None:
        cluster, rounds = self.cluster, 0
        while not self.stop.is_set():
            steps = [("sub", "sh", "-c", "sleep 0.3")] if rounds % 2 == 0 else []
            steps += [("check", "--json"), ("status", "--json")]
            for args in steps:
                proc = cluster.qpy_as(user, *args, cwd=self.dirs[user], check=False)
                self.requests += 1
                if proc.returncode != 0:
                    self.refused.append(f"{user}: qpy {' '.join(args)}: {proc.stderr.strip()}")
                elif args[0] == "sub":
                    self.jobs[user].append(int(proc.stdout.split()[1]))
            if user == "alice":
                self.requests += 1
                if cluster.admin("status", check=False).returncode != 0:
                    self.refused.append("admin: qpy-admin status")
            rounds += 1

    def lost(self) -> list[str]:
        """Jobs of alice and bob that did not end done with exit code 0."""
        lost = []
        for user, ids in self.jobs.items():
            records = {j["id"]: j for j in self.cluster.jobs(user)}
            for job in ids:
                r = records.get(job)
                if r is None or (r["status"], r["exit_code"]) != ("done", 0):
                    lost.append(f"{user} {job}: {r and (r['status'], r['exit_code'])}")
        return lost


def attacks(cluster: Cluster, stop: threading.Event, counts: dict) -> None:
    """Mallory's attacks of issue 11, over and over, and one removal and readmission."""
    def forge(running: list[dict]) -> None:
        cluster.wire_as("mallory", [{"connect": None}, {"send": {
            "type": "hello", "running": running, "queue_size": 10**6}}, {"close": True}])
        counts["attacks"] += 1

    rounds = 0
    while not stop.is_set():
        forge([{"job": i, "node": n, "cores": 10**6, "mem": 1}
               for i, n in enumerate(("n1", "n2", "n3"), 1)])
        forge([{"job": 1, "node": "n1", "cores": 1, "mem": float("inf")}])
        forge([{"job": i, "node": f"fake{i}", "cores": 1, "mem": 1} for i in range(2000)])
        for mode, count in (("auth", 100), ("silent", 100), ("trickle", 8)):
            proc = cluster.probe_process("mallory", HOLD_PROBE,
                                         {"mode": mode, "count": count, "interval": 1.0})
            proc.stdout.readline()
            time.sleep(2)
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.communicate(timeout=120)
            counts["attacks"] += 1
        cluster.wire_as("mallory", [{"connect": {"claim": f"nobody{i}", "key": "00" * 32}}
                                    for i in range(200)], timeout=600)
        counts["attacks"] += 1
        if rounds == 1:
            name = cluster.name("mallory")
            cluster.admin("removeuser", name)
            time.sleep(2)
            cluster.admin("adduser", name, "--out", str(cluster.admin_account.home / "again"))
            counts["attacks"] += 1
        rounds += 1


def main() -> int:
    if os.geteuid() != 0:
        print("soak: needs root (real Unix accounts)", file=sys.stderr)
        return 2
    total = 100_000
    if "--messages" in sys.argv:
        total = int(sys.argv[sys.argv.index("--messages") + 1])
    share = total // 100
    specs = {"alice": {"mode": "user", "master": 22 * share, "multiuser": 12 * share,
                       "garbage": 2 * share},
             "bob": {"mode": "user", "master": 22 * share, "multiuser": 12 * share,
                     "garbage": 2 * share},
             "admin": {"mode": "admin", "multiuser": 14 * share, "garbage": share},
             "mallory": {"mode": "hostile", "multiuser": 13 * share, "garbage": 2 * share}}
    started = time.monotonic()
    with started_cluster(users=("alice", "bob", "mallory")) as cluster:
        cluster.reset()
        pids = {"multiuser": cluster.multiuser_pid(),
                **{u: cluster.master_pid(u) for u in ("alice", "bob", "mallory")}}
        legit = Legit(cluster)
        counts = {"attacks": 0}
        results: list = []
        workers = [threading.Thread(target=run_worker, args=(cluster, user,
                                                             {**spec, "seed": i}, results))
                   for i, (user, spec) in enumerate(specs.items())]
        users = [threading.Thread(target=legit.run, args=(u,)) for u in legit.jobs]
        attacker = threading.Thread(target=attacks, args=(cluster, legit.stop, counts))
        for thread in (*workers, *users, attacker):
            thread.start()
        for thread in workers:
            thread.join()
        legit.stop.set()
        for thread in (*users, attacker):
            thread.join()
        exits = sum(1 for name, pid in pids.items()
                    if pid != (cluster.multiuser_pid() if name == "multiuser"
                               else cluster.master_pid(name)))
        for user in legit.jobs:  # every legitimate job ends by itself
            cluster.qpy_as(user, "check")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(
                j["status"] in ("queue", "running") for u in legit.jobs
                for j in cluster.jobs(u)):
            time.sleep(0.5)
        lost = legit.lost()
        messages = sum(r["sent"] for _, r in results)
        bad = sum(r["bad"] for _, r in results)
        jobs = sum(len(ids) for ids in legit.jobs.values())
    for user, result in results:
        if result["bad"]:
            print(f"soak: {user}: {result['bad']} bad replies, e.g. {result['examples']}",
                  file=sys.stderr)
    for line in legit.refused[:10] + lost[:10]:
        print(f"soak: {line}", file=sys.stderr)
    print(f"soak: {messages} messages, {exits} daemon exits, {len(legit.refused)} "
          f"legitimate requests refused, {len(lost)} jobs lost ({jobs} jobs and "
          f"{legit.requests} requests of real users, {counts['attacks']} attacks, "
          f"{bad} bad replies, {time.monotonic() - started:.0f} s)")
    failed = exits or legit.refused or lost or bad or messages < total
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
