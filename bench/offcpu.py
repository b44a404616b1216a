#!/usr/bin/env python3
"""Off-CPU time of an agent's threads, by where they blocked, from a `perf record` of
`sched:sched_switch` with call graphs (what `perf record -g` of CPU samples cannot show: a
launch slot waiting for its child's `execve`, a cgroupfs lock, a /proc read).

    perf record -a -g -e sched:sched_switch -o off.data -- sleep 2   # during a batch
    bench/offcpu.py off.data

Prints, per (thread name, state, first four kernel frames), the total time the threads were
switched out there and how many times, summed over threads; `tokio` is the agents' blocking
pool (and a launched child until its `execve` renames it), `shoal` their runtime threads.
"""
import collections, re, subprocess, sys

data = sys.argv[1]
out = subprocess.run(["perf","script","-i",data],capture_output=True,text=True).stdout
pending = {}; tot = collections.Counter(); cnt = collections.Counter()
ev = None
def flush(ev):
    if ev is None: return
    t, prev_comm, prev_pid, state, next_pid, stack = ev
    if next_pid in pending:
        t0, key = pending.pop(next_pid); tot[key] += t - t0; cnt[key] += 1
    if prev_comm.startswith("tokio-rt-worker") or prev_comm.startswith("shoal"):
        frames = [f for f in stack if not re.match(r"(__schedule|schedule|__traceiter|schedule_preempt|preempt_schedule|schedule_timeout|io_schedule)", f)]
        key = prev_comm[:5] + " " + state + " " + " < ".join(frames[:4])
        pending[prev_pid] = (t, key)
hdr = re.compile(r"\s*(\S+)\s+(\d+)\s+\[\d+\]\s+([\d.]+):\s+sched:sched_switch: prev_comm=(.*?) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) ==> next_comm=.*? next_pid=(\d+)")
stack = []
for line in out.splitlines():
    m = hdr.match(line)
    if m:
        flush(ev); stack = []
        ev = (float(m.group(3)), m.group(4), int(m.group(5)), m.group(6), int(m.group(7)), stack)
    elif line.strip():
        parts = line.split()
        if len(parts) >= 2: stack.append(parts[1].split("+")[0])
flush(ev)
for k, v in tot.most_common(25): print(f"{v*1000:9.1f} ms {cnt[k]:6d}  {k}")
