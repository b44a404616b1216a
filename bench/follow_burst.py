#!/usr/bin/env python3
"""A burst of events against a follower: runs bench/scheduling.py (10,000 `true` on 3 agents)
and follows n1's event stream (`shoal events --follow --json --topic Placement`) during it.
Prints the bench's batch line and what the follower got: how many distinct slots of the batch
it saw placed (n1 places the slots it coordinates, about a third) and every `Stream` notice
(`Missed`: the ring moved past the reader; `Dropped`: the core's queue overflowed).

Usage: bench/follow_burst.py BIN   (run from the repository root)"""
import glob, json, os, subprocess, sys, time
BIN = sys.argv[1]
bench = subprocess.Popen(["python3", "bench/scheduling.py", "--bin", BIN, "--sizes", "10000", "--singles", "0",
                          "--out", os.devnull], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
start = time.time(); addr = None
while time.time() - start < 60 and addr is None:
    for d in sorted(glob.glob("/tmp/shoal-sched-bench-*/n1/addresses.json"), key=os.path.getmtime, reverse=True):
        if os.path.getmtime(d) >= start - 1:
            try: addr = json.load(open(d))["http"]
            except Exception: pass
            break
    time.sleep(0.05)
url = addr if addr.startswith("http") else f"http://{addr}"
f = subprocess.Popen([BIN, "events", "--follow", "--json", "--topic", "Placement", "--addr", url],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
placed = set(); notices = []
import threading
def read():
    for line in f.stdout:
        e = json.loads(line)
        if e["topic"] == "Stream": notices.append(e)
        elif e["type"] == "Placed" and e["payload"]["job"].startswith("batch10000"): placed.add(e["payload"]["slot"])
t = threading.Thread(target=read, daemon=True); t.start()
out = bench.communicate()[0]
time.sleep(0.5); f.kill()
print(out.strip().splitlines()[1] if len(out.splitlines()) > 1 else out)
print(json.dumps({"placed_seen": len(placed), "notices": [(n["type"], n["payload"].get("missed"), n["payload"].get("count")) for n in notices]}))
