#!/usr/bin/env python3
"""A batch submitted while the cluster forms: duplicate placements and what they cost.

Starts 3 agents (as bench/scheduling.py does, with a large events ring), submits a batch of
`true` tasks as soon as the first agent lists three members, and reads every agent's event
stream afterwards. Placers whose member views still differ place some slots twice; the rule
of docs/faults.md ("The incumbent wins") supersedes one copy. Per run it reports the batch's
rate, its extra attempts per 1,000 placements (a slot whose copies were all killed needs
another attempt), the superseded copies (kills requested), and how many of those launched
anyway (a `Started` for a copy its node had asked to kill).

With --singles N it submits N single-task service jobs (`sleep 30`) one after another instead,
from the moment three members are listed, and reports per run the slowest submit→running (as
bench/scheduling.py measures it) and which jobs took over 200 ms, with their submission time
after the cluster formed: the start-up tail of issue 17.

Usage: bench/forming.py [--runs 10] [--tasks 5000 | --singles 40] [--bin PATH] [--keep]
SHOAL_BENCH_LOG sets the agents' RUST_LOG (default warn).
--keep leaves each run's data dir (logs and events) in place; by default only runs with extra
attempts keep theirs.
"""
import argparse, json, os, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scheduling as S  # noqa: E402

def events(agent):
    tok = open(agent["token_file"]).read().strip()
    req = urllib.request.Request(f"http://{agent['http']}/v1/events?follow=false&topic=Task",
                                 headers={"authorization": f"Bearer {tok}"})
    body = urllib.request.urlopen(req, timeout=120).read().decode()
    return [json.loads(l[6:]) for l in body.splitlines() if l.startswith("data: ")]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10); ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--singles", type=int, default=0)
    ap.add_argument("--bin", default=S.BIN); ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    for r in range(a.runs):
        root = tempfile.mkdtemp(prefix="shoal-forming-"); os.chmod(root, 0o755)
        key = os.path.join(root, "cluster.key")
        open(key, "w").write(subprocess.check_output([a.bin, "keygen"]).decode())
        keep = True
        agents = S.start_agents(root, key, a.bin, ["--events-kept", "300000"]); formed = time.time()
        api = S.Api(agents[0]["http"], agents[0]["token_file"])
        try:
            if a.singles:
                slow, worst = [], 0.0
                for i in range(a.singles):
                    jid = f"one{i}"; at = time.time()
                    ms = S.single(api, jid); worst = max(worst, ms)
                    if ms > 200: slow.append({"job": jid, "ms": round(ms), "submitted_ms_after_forming": round((at - formed) * 1000)})
                keep = a.keep or bool(slow)
                out = {"run": r, "singles": a.singles, "max_ms": round(worst, 1), "over_200_ms": slow}
                if keep: out["data_and_logs"] = root
                print(json.dumps(out), flush=True)
                continue
            res = S.batch(api, a.tasks, 0, [x["proc"].pid for x in agents])
            kills, started_doomed = 0, 0
            for agent in agents:
                doomed = set()
                for e in events(agent):
                    if e["type"] == "KillRequested" and e["payload"].get("reason") == "superseded":
                        kills += 1; doomed.add(e["payload"]["task"])
                    elif e["type"] == "Started" and e["payload"]["task"] in doomed:
                        started_doomed += 1
            out = {"run": r, "tasks_per_s": res["tasks_per_s"], "extra_attempts_per_1000": res["conflicts_per_1000"],
                   "superseded_copies": kills, "superseded_copies_started": started_doomed}
            keep = a.keep or res["conflicts_per_1000"] > 0
            if keep: out["data_and_logs"] = root
            print(json.dumps(out), flush=True)
        finally:
            for x in agents: x["proc"].send_signal(signal.SIGTERM)
            for x in agents:
                try: x["proc"].wait(30)
                except subprocess.TimeoutExpired: x["proc"].kill()
            if not keep: shutil.rmtree(root, ignore_errors=True)

if __name__ == "__main__":
    main()
