#!/usr/bin/env python3
"""Records the code an idle `shoal agent` runs and writes the linker's symbol-ordering file.

The agent's idle code is about a thousand functions (1.6 MiB) spread over the whole binary,
and every page it runs maps the 64-128 KiB around it (docs/agent.md, "Code after the start"). Linking
that code together (`--symbol-ordering-file`, src/hot-code.order, build.rs) keeps an idle
agent's resident code small. Symbol names change with the code (hashes, inlining), so this
script regenerates the file from a release build of the current code:

  cargo build --release -p shoal --bin shoal        # the profile CI ships (fat LTO)
  bench/hot_code.py --bin target/release/shoal [--agents 32] [--window 60] [--merge src/hot-code.order]
  cargo build --release -p shoal --bin shoal        # links again with the new order

It starts N agents (as bench/membership.py does) from a private copy of the binary, and
records, from just before their first code release (30 s after start,
node/src/code_pages.rs):
  1. for one window, cpu-clock samples with DWARF call chains (every function on a sampled
     stack ran) and page faults (what each agent ran first in a window of code it had not
     mapped since the release): the hot functions, cheaply;
  2. for a second window, a uprobe on the entry of every other function whose code some
     agent has resident by then (tracefs `uprobe_events`, counted in `uprobe_profile`):
     every function that runs, however rarely or briefly, which sampling misses; each one
     left out costs a 64 KiB window. Removing ~9,000 uprobes takes the kernel about 5
     minutes (one RCU grace period each).
The build that is profiled must have this build.rs (adding it changed the hashes in the
names of the functions the `shoal` crate instantiates).
The file lists the functions by mangled name, sampled ones first (hottest first), then the
probed ones (most calls first). `--merge` appends the symbols of an earlier file that still
exist in this binary. Needs root (perf, tracefs); a quiet machine is not needed: only which
functions run counts, not how long.
"""
import argparse, bisect, collections, os, re, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import membership  # noqa: E402

RECORD_AFTER_S = 27  # after the last agent is ready: before the first code release (30 s)
TRACEFS = "/sys/kernel/tracing"
GROUP = f"shoal_hot_code_{os.getpid()}"


def symbols(binary):
    """(start addresses, [(start, end, name, type)]) of the binary's defined code and data."""
    out = subprocess.check_output(["nm", "-S", "--defined-only", binary], text=True)
    syms = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[2] not in "tTrRdDbB":
            continue
        start, size = int(parts[0], 16), int(parts[1], 16)
        if size:
            syms.append((start, start + size, parts[3], parts[2]))
    syms.sort()
    return [s[0] for s in syms], syms


def file_offset(binary, vaddr):
    """The file offset of a virtual address of the binary (its LOAD segments)."""
    for line in subprocess.check_output(["readelf", "-lW", binary], text=True).splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            offset, start, size = int(f[1], 16), int(f[2], 16), int(f[4], 16)
            if start <= vaddr < start + size:
                return vaddr - start + offset
    raise SystemExit(f"{vaddr:#x} is in no segment of {binary}")


def ensure_tracefs():
    """Mounts tracefs where a fresh machine has not (it is needed for the uprobes)."""
    if os.path.exists(f"{TRACEFS}/uprobe_events"):
        return
    done = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True, text=True)
    if done.returncode != 0 or not os.path.exists(f"{TRACEFS}/uprobe_events"):
        raise SystemExit(f"no {TRACEFS}/uprobe_events and `mount -t tracefs nodev {TRACEFS}` "
                         f"failed ({done.stderr.strip()}): run as root on a kernel with uprobes")


class Uprobes:
    """One uprobe per function entry, in a tracefs group of their own."""

    def __init__(self, binary, functions):
        ensure_tracefs()
        self.functions = functions  # [(vaddr, name)]
        delta = file_offset(binary, functions[0][0]) - functions[0][0]
        fd = os.open(f"{TRACEFS}/uprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            for i, (vaddr, _) in enumerate(functions):
                os.write(fd, f"p:{GROUP}/f{i} {binary}:{vaddr + delta:#x}\n".encode())
        finally:
            os.close(fd)

    def enable(self):
        """Arms each probe; one the kernel refuses (an entry it cannot step over) is skipped."""
        self.armed = []
        for i in range(len(self.functions)):
            try:
                with open(f"{TRACEFS}/events/{GROUP}/f{i}/enable", "w") as f:
                    f.write("1")
                self.armed.append(i)
            except OSError:
                pass

    def hits(self):
        """{name: calls} of the probed functions that ran."""
        out = {}
        with open(f"{TRACEFS}/uprobe_profile") as f:
            for line in f:
                words = line.split()
                if len(words) == 3 and words[1].startswith("f") and int(words[2]) > 0:
                    out[self.functions[int(words[1][1:])][1]] = int(words[2])
        return out

    def remove(self):
        # One RCU grace period per probe: minutes for thousands.
        for i in getattr(self, "armed", []):
            with open(f"{TRACEFS}/events/{GROUP}/f{i}/enable", "w") as f:
                f.write("0")
        kept = []
        with open(f"{TRACEFS}/uprobe_events") as f:
            kept = [l for l in f if not l.startswith(f"p:{GROUP}/")]
        with open(f"{TRACEFS}/uprobe_events", "w") as f:
            f.write("".join(kept))


def lookup(index, addr):
    starts, syms = index
    i = bisect.bisect_right(starts, addr) - 1
    if i >= 0 and syms[i][0] <= addr < syms[i][1]:
        return syms[i][2]
    return None


def base_of(pid, binary):
    """Load address of the binary in `pid` (the mapping at file offset 0)."""
    real = os.path.realpath(binary)
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == real and int(fields[2], 16) == 0:
                return int(fields[0].split("-")[0], 16)
    raise SystemExit(f"pid {pid} does not map {real}")


def resident_code_pages(pid, binary, base):
    """Page numbers (of the binary's addresses) of its code resident in `pid` (pagemap)."""
    real, pages = os.path.realpath(binary), set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[5].strip() != real or "x" not in fields[1]:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            pagemap.seek(start // 4096 * 8)
            data = pagemap.read((end - start) // 4096 * 8)
            for i in range(len(data) // 8):
                if int.from_bytes(data[i * 8:i * 8 + 8], "little") >> 63:
                    pages.add((start - base) // 4096 + i)
    return pages


def start_agents(binary, n):
    membership.BIN = binary
    root = tempfile.mkdtemp(prefix="shoal-hot-code-")
    os.chmod(root, 0o755)
    key = os.path.join(root, "cluster.key")
    with open(key, "w") as f:
        f.write(subprocess.check_output([binary, "keygen"]).decode())
    seed = membership.Agent("n1", key, root)
    seed.wait_ready(time.time() + 30)
    agents = [seed] + [membership.Agent(f"n{i}", key, root, seed.gossip) for i in range(2, n + 1)]
    for a in agents:
        a.wait_ready(time.time() + 60)
    return agents


def sample(binary, pids, window, freq, tmp):
    """Phase 1: perf samples and page faults of `pids` for `window` seconds."""
    plist = ",".join(map(str, pids))
    samples, faults = os.path.join(tmp, "samples.data"), os.path.join(tmp, "faults.data")
    rec = [
        subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(freq),
                          "--call-graph", "dwarf,4096", "-p", plist, "-o", samples],
                         stdout=subprocess.DEVNULL),
        subprocess.Popen(["perf", "record", "-q", "-e", "page-faults", "-c", "1", "-d",
                          "-p", plist, "-o", faults], stdout=subprocess.DEVNULL),
    ]
    time.sleep(window)
    for p in rec:
        p.send_signal(2)
    for p in rec:
        p.wait()
    return samples, faults


FRAME = re.compile(r"^\s*[0-9a-f]+ (\S+) \((.*)\)$")


def frames(data, binary):
    """Names of the binary's functions in every sample and call-chain frame of a perf.data."""
    real = os.path.realpath(binary)
    out = subprocess.check_output(["perf", "script", "-i", data, "-F", "ip,sym,dso", "--no-demangle",
                                   "--no-inline"], text=True, stderr=subprocess.DEVNULL)
    for line in out.splitlines():
        m = FRAME.match(line)
        if m and m.group(2) == real and m.group(1) != "[unknown]":
            yield m.group(1)


def fault_data(data, bases):
    """(pid, data address) of every page fault in a perf.data of `page-faults -d`."""
    out = subprocess.check_output(["perf", "script", "-i", data, "-F", "pid,addr", "--no-demangle"],
                                  text=True, stderr=subprocess.DEVNULL)
    for line in out.splitlines():
        words = line.split()
        if len(words) == 2 and int(words[0]) in bases:
            yield int(words[0]), int(words[1], 16)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--agents", type=int, default=32)
    p.add_argument("--window", type=float, default=60, help="seconds of each phase")
    p.add_argument("--freq", type=int, default=4000)
    p.add_argument("--merge", help="an earlier ordering file whose symbols are kept")
    p.add_argument("--out", default=os.path.join(membership.ROOT, "src", "hot-code.order"))
    args = p.parse_args()
    ensure_tracefs()  # before phase 1, not after its minutes
    with tempfile.TemporaryDirectory(prefix="shoal-hot-code-") as tmp:
        # A copy: the uprobes and the agents' page faults concern no other process.
        binary = os.path.join(tmp, "shoal")
        shutil.copy(args.bin, binary)
        os.chmod(tmp, 0o755)
        index = symbols(binary)
        agents = start_agents(binary, args.agents)
        probes = None
        try:
            time.sleep(RECORD_AFTER_S)
            pids = [a.proc.pid for a in agents]
            bases = {pid: base_of(pid, binary) for pid in pids}
            samples, faults = sample(binary, pids, args.window, args.freq, tmp)
            sampled = collections.Counter()
            for data in (samples, faults):
                sampled.update(frames(data, binary))
            # What the faults read: code (counted above by their instruction) or read-only data.
            for pid, addr in fault_data(faults, bases):
                name = lookup(index, addr - bases[pid])
                if name:
                    sampled[name] += 1
            print(f"phase 1: {len(sampled)} functions sampled", file=sys.stderr)
            # Only functions on a code page some agent has mapped since the release can run
            # at idle (fewer probes to remove afterwards).
            mapped = set()
            for pid in pids:
                mapped |= resident_code_pages(pid, binary, bases[pid])
            rest, at = [], set()
            for start, end, name, kind in index[1]:
                on_mapped = any(p in mapped for p in range(start // 4096, (end - 1) // 4096 + 1))
                if kind in "tT" and on_mapped and name not in sampled and start not in at:
                    rest.append((start, name))
                    at.add(start)
            probes = Uprobes(binary, rest)
            probes.enable()
            time.sleep(args.window)
            probed = collections.Counter(probes.hits())
            print(f"phase 2: {len(probed)} more of {len(rest)} probed functions ran", file=sys.stderr)
        finally:
            for a in agents:
                a.stop()
            if probes:
                probes.remove()
    names = [n for n, _ in sampled.most_common()] + [n for n, _ in probed.most_common()]
    known = {s[2] for s in index[1]}
    if args.merge and os.path.exists(args.merge):
        seen = set(names)
        with open(args.merge) as f:
            for line in f:
                n = line.strip()
                if n and not n.startswith("#") and n in known and n not in seen:
                    names.append(n)
                    seen.add(n)
    with open(args.out, "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"{len(names)} symbols written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
