#!/usr/bin/env python3
"""bootgate benchmarks, run on demand (not in CI's test step): python3 bench/run.py

Each figure is measured side by side in one run, as the median of several rounds,
and printed as a ratio against its goal. Results go to stdout as a Markdown table
(paste into bench/RESULTS.md with the machine they came from).

Needs: a built bootgate (cargo build --release), QEMU, the demo image (built on
first use). Uses TCG unless BENCH_ACCEL says otherwise.
"""
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOOTGATE = os.environ.get("BOOTGATE", os.path.join(ROOT, "target", "release", "bootgate"))
ACCEL = os.environ.get("BENCH_ACCEL", "tcg")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
# Measures to run (comma-separated: cold, restore, parallel, panic, overlay, whole, accel,
# exec, fuzz, stall, dumps); all by default.
ONLY = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))


def wanted(name):
    return not ONLY or name in ONLY
READY_TIMEOUT = 120.0


def bootgate(*args, **kw):
    return subprocess.run([BOOTGATE, *args], capture_output=True, text=True, **kw)


def demo_manifest():
    out = bootgate("image", "build", "demo")
    if out.returncode != 0:
        sys.exit(f"cannot build the demo image: {out.stderr}")
    return out.stdout.split("image: ", 1)[1].splitlines()[0].strip()


def write_suite(tmp, text):
    path = os.path.join(tmp, "suite.toml")
    with open(path, "w") as f:
        f.write(text)
    return path, os.path.join(tmp, "results")


def run_suite(text, *extra):
    """Runs a suite; returns (wall seconds, run.json, peak RSS of bootgate itself in KiB).

    The peak is the bootgate process's own high-water mark (VmHWM), sampled while it
    runs: rusage of a waited child would include its largest descendant, a QEMU."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out_dir = write_suite(tmp, text)
        start = time.monotonic()
        proc = subprocess.Popen([BOOTGATE, "run", path, "--accel", ACCEL, "-q", "--out", out_dir, *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_kib = 0
        while proc.poll() is None:
            try:
                with open(f"/proc/{proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)
        wall = time.monotonic() - start
        stderr = proc.stderr.read()
        if proc.returncode not in (0, 1):
            sys.exit(f"bootgate failed ({proc.returncode}): {stderr}")
        with open(os.path.join(out_dir, "latest", "run.json")) as f:
            return wall, json.load(f), peak_kib


def minimal_boot_to_agent(argv):
    """The baseline: start the same QEMU command line, wait for the agent to answer."""
    tmp = tempfile.mkdtemp(prefix="bench-")
    try:
        argv = list(argv)
        # Same devices and sockets, in a folder of our own; an overlay of our own.
        old = [a for a in argv if "qmp.sock" in a][0].split("path=")[1].split("/qmp.sock")[0]
        argv = [a.replace(old, tmp) for a in argv]
        base = [a for a in argv if "file.filename=" in a][0].split("file.filename=")[1]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", BASE, base], check=True)
        argv = [a for a in argv if a != "-S"]
        start = time.monotonic()
        qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sock_path = os.path.join(tmp, "agent.sock")
            while not os.path.exists(sock_path):
                time.sleep(0.005)
            # The serial socket must be read or QEMU blocks on a full console buffer.
            serial = socket.socket(socket.AF_UNIX)
            serial.connect(os.path.join(tmp, "serial.sock"))
            serial.setblocking(False)
            agent = socket.socket(socket.AF_UNIX)
            agent.connect(sock_path)
            # Like bootgate: one sync per attempt, each waiting up to a second for its
            # answer (until the guest opens its port QEMU reads nothing we write).
            n = 0
            while time.monotonic() - start < READY_TIMEOUT:
                n += 1
                agent.settimeout(5)
                agent.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": n}}).encode())
                deadline = time.monotonic() + 1.0
                data = b""
                while time.monotonic() < deadline:
                    try:
                        while serial.recv(65536):
                            pass
                    except BlockingIOError:
                        pass
                    agent.settimeout(max(0.001, min(0.05, deadline - time.monotonic())))
                    try:
                        data += agent.recv(65536)
                    except (socket.timeout, BlockingIOError):
                        continue
                    if ('"return": %d}' % n).encode() in data or ('"return":%d}' % n).encode() in data:
                        return time.monotonic() - start
            raise RuntimeError("the minimal script never saw the agent")
        finally:
            qemu.kill()
            qemu.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def overlay_seconds(base_sizes):
    """Median time of `qemu-img create` of an overlay on a base of each size. The
    sizes alternate sample by sample, so both see the same machine load (in blocks,
    a load change between them showed up as a 1.34 "ratio" of two ~10 ms figures)."""
    with tempfile.TemporaryDirectory() as tmp:
        bases = []
        for n, size in enumerate(base_sizes):
            base = os.path.join(tmp, f"base{n}.qcow2")
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, size], check=True)
            bases.append(base)
        times = [[] for _ in bases]
        for i in range(ROUNDS * 10):
            for n, base in enumerate(bases):
                start = time.monotonic()
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
                                os.path.join(tmp, f"o{n}-{i}.qcow2")], check=True)
                times[n].append(time.monotonic() - start)
        return [statistics.median(t) for t in times]


class Qmp:
    """A bare QMP client for the raw scripts: greeting, capabilities, commands."""

    def __init__(self, path, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.002)
        self.buf = b""
        self.read()  # greeting
        self.call("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("QMP closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self.read()
            if "return" in reply or "error" in reply:
                if "error" in reply:
                    raise RuntimeError(f"{command}: {reply['error']}")
                return reply["return"]


class Agent:
    """A bare guest-agent client: sync, then exec with status polls every POLL_S."""
    POLL_S = 0.001

    def __init__(self, path, serial_path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        # The serial socket must be read or QEMU blocks on a full console buffer.
        self.serial = socket.socket(socket.AF_UNIX)
        self.serial.connect(serial_path)
        self.serial.setblocking(False)
        self.buf = b""
        self.n = 0

    def drain_serial(self):
        try:
            while self.serial.recv(65536):
                pass
        except BlockingIOError:
            pass

    def reply(self, deadline):
        while time.monotonic() < deadline:
            self.drain_serial()
            if b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                line = line.lstrip(b"\xff").strip()
                if line:
                    return json.loads(line)
                continue
            self.sock.settimeout(max(0.001, min(0.05, deadline - time.monotonic())))
            try:
                chunk = self.sock.recv(65536)
            except (socket.timeout, BlockingIOError):
                continue
            if not chunk:
                raise RuntimeError("agent closed")
            self.buf += chunk
        return None

    def sync(self, start):
        """Like bootgate: one sync per attempt, each waiting up to a second."""
        while time.monotonic() - start < READY_TIMEOUT:
            self.n += 1
            self.sock.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": self.n}}).encode())
            deadline = time.monotonic() + 1.0
            while True:
                reply = self.reply(deadline)
                if reply is None:
                    break
                if reply.get("return") == self.n:
                    return
        raise RuntimeError("the raw script never saw the agent")

    def call(self, command, **arguments):
        self.sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode())
        reply = self.reply(time.monotonic() + 30)
        if reply is None or "return" not in reply:
            raise RuntimeError(f"{command}: {reply}")
        return reply["return"]

    def exec_true(self):
        """`sh -c true`, as bootgate runs `exec { run = "true" }`; seconds it took."""
        start = time.monotonic()
        pid = self.call("guest-exec", path="/bin/sh", arg=["-c", "true"], **{"capture-output": True})["pid"]
        while not self.call("guest-exec-status", pid=pid)["exited"]:
            time.sleep(self.POLL_S)
        return time.monotonic() - start


def vm_folder_of(argv):
    return [a for a in argv if "qmp.sock" in a][0].split("path=")[1].split("/qmp.sock")[0]


def raw_job(argv, restore_from=None):
    """The raw QEMU script a user could write instead of bootgate, timed whole: make
    an overlay, start QEMU, (restore the saved state: x-ignore-shared, migrate-incoming
    from the device state on fd 3, cont), wait for the agent, run `sh -c true`, quit.
    Returns (whole seconds, exec seconds)."""
    start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bench-raw-")
    try:
        argv = [a.replace(vm_folder_of(argv), tmp) for a in argv]
        overlay = [a for a in argv if "file.filename=" in a][0].split("file.filename=")[1]
        backing = os.path.join(restore_from, "disk.qcow2") if restore_from else BASE
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, overlay], check=True)
        fds = ()
        if restore_from:
            devices = os.open(os.path.join(restore_from, "devices.state"), os.O_RDONLY)
            if devices != 3:
                os.dup2(devices, 3)
                os.close(devices)
            fds = (3,)
        else:
            argv = [a for a in argv if a != "-S"]
        qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=fds)
        if restore_from:
            os.close(3)
        try:
            qmp = Qmp(os.path.join(tmp, "qmp.sock"))
            if restore_from:
                qmp.call("migrate-set-capabilities", capabilities=[{"capability": "x-ignore-shared", "state": True}])
                qmp.call("migrate-incoming", uri="fd:3")
                while qmp.call("query-migrate").get("status") != "completed":
                    time.sleep(0.002)
                qmp.call("cont")
            agent = Agent(os.path.join(tmp, "agent.sock"), os.path.join(tmp, "serial.sock"))
            agent.sync(start)
            exec_s = agent.exec_true()
            qmp.call("quit")
            qemu.wait(timeout=30)
        finally:
            if qemu.poll() is None:
                qemu.kill()
                qemu.wait()
        return time.monotonic() - start, exec_s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def whole_run(text, accel=None):
    """Whole-process seconds of `bootgate run` on a suite (nothing sampled while it
    runs, so the figure is the process's own), and its run.json."""
    with tempfile.TemporaryDirectory() as tmp:
        path, out_dir = write_suite(tmp, text)
        start = time.monotonic()
        proc = subprocess.run([BOOTGATE, "run", path, "--accel", accel or ACCEL, "-q", "--out", out_dir],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            sys.exit(f"bootgate failed ({proc.returncode}): {proc.stderr}")
        with open(os.path.join(out_dir, "latest", "run.json")) as f:
            return wall, json.load(f)


def state_folder_of(argv):
    """The saved state a restoring command line maps its RAM from."""
    ram = [a for a in argv if "mem-path=" in a][0].split("mem-path=")[1].split(",")[0]
    return os.path.dirname(ram)


BOOT_SUITE = """[suite]
name = "bench"
image = "demo"
[[scenario]]
name = "boot"
steps = [{ boot = {} }]
"""

# With --jobs 1 the first scenario restores into a QEMU it starts itself; each later
# one takes the standby QEMU its predecessor started while it ran.
RESTORE_SUITE = """[suite]
name = "restore"
image = "demo"
""" + "".join(f"""[[scenario]]
name = "restore{i}"
steps = [{{ exec = {{ run = "true" }} }}]
""" for i in range(4))

PARALLEL_SUITE = """[suite]
name = "par"
image = "demo"
""" + "".join(f"""[[scenario]]
name = "s{i}"
steps = [{{ exec = {{ run = "true" }} }}, {{ reboot = {{}} }}]
""" for i in range(6))

CRASH_SUITE = f"""[suite]
name = "crash"
image = "demo"
[suite.evidence]
memory_dumps = "none"
[driver.demo_sensor]
source = "{ROOT}/scenarios/demo/drivers/demo_sensor"
content_file = "demo_sensor.content"
reload = "echo 1 > /sys/module/demo_sensor/parameters/reload"
[[scenario]]
name = "cf291"
expect = "boot_loop"
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ apply_content = {{ driver = "demo_sensor", file = "{ROOT}/scenarios/demo/content/cf291-21-fields.content", reload = true }} }},
]
"""


COLD_EXEC_SUITE = """[suite]
name = "cold"
image = "demo"
[[scenario]]
name = "t"
cold_boot = true
steps = [{ exec = { run = "true" } }]
"""

WARM_EXEC_SUITE = """[suite]
name = "warm"
image = "demo"
[[scenario]]
name = "t"
steps = [{ exec = { run = "true" } }]
"""

# Twenty do-nothing commands in one restored guest: the exec latency a step sees.
EXEC_STEPS = 20
EXEC_SUITE = """[suite]
name = "exec"
image = "demo"
[[scenario]]
name = "t"
steps = [""" + ", ".join('{ exec = { run = "true" } }' for _ in range(EXEC_STEPS)) + """]
"""


def exec_step_seconds(run):
    return [st["duration_ms"] / 1000 for sc in run["scenarios"] for st in sc["steps"] if st.get("kind") == "exec"]


def whole_process_rows(rows):
    """Whole-process figures, each beside a raw QEMU script doing the same job in the
    same round: cold (boot + exec + quit), warm (restore + exec + quit), the default
    --accel auto against --accel tcg, and the exec latency itself."""
    cold_ours, cold_raw, warm_ours, warm_raw, auto, tcg, exec_ours, exec_raw = ([] for _ in range(8))
    for _ in range(ROUNDS if wanted("whole") else 0):
        t, run = whole_run(COLD_EXEC_SUITE)
        cold_ours.append(t)
        cold_raw.append(raw_job(run["qemu"]["argv"][0]["argv"])[0])
        t, run = whole_run(WARM_EXEC_SUITE)
        warm_ours.append(t)
        argv = run["qemu"]["argv"][0]["argv"]
        if "-incoming" not in argv:
            sys.exit("the warm suite did not restore a saved state")
        t, e = raw_job(argv, restore_from=state_folder_of(argv))
        warm_raw.append(t)
        exec_raw.append(e)
    if cold_ours:
        o, r = statistics.median(cold_ours), statistics.median(cold_raw)
        rows.append(("whole process, cold boot + exec + quit: bootgate / raw QEMU script", f"{o:.2f} s / {r:.2f} s",
                     f"{o / r:.3f}", "<= 1.05", o / r <= 1.05))
        o, r = statistics.median(warm_ours), statistics.median(warm_raw)
        rows.append(("whole process, restore + exec + quit: bootgate (raw QEMU script)", f"{o:.3f} s ({r:.3f} s)",
                     f"{o:.3f} s", "<= 0.3 s", o <= 0.3))
    for _ in range(ROUNDS if wanted("accel") else 0):
        auto.append(whole_run(WARM_EXEC_SUITE, accel="auto")[0])
        tcg.append(whole_run(WARM_EXEC_SUITE, accel="tcg")[0])
    if auto:
        a, t = statistics.median(auto), statistics.median(tcg)
        rows.append(("whole process from a saved state, --accel auto / --accel tcg (verdict kept per host boot)",
                     f"{a:.3f} s / {t:.3f} s", f"{a / t:.2f}", "<= 1.10", a / t <= 1.10))
    for _ in range(ROUNDS if wanted("exec") else 0):
        exec_ours.extend(exec_step_seconds(whole_run(EXEC_SUITE)[1]))
    if exec_ours:
        o = statistics.median(exec_ours)
        raw = f" (raw script, 1 ms polls: {statistics.median(exec_raw) * 1000:.0f} ms)" if exec_raw else ""
        rows.append((f"exec latency of a do-nothing command, `sh -c true` ({len(exec_ours)} steps){raw}",
                     f"{o * 1000:.0f} ms", f"{o * 1000:.0f} ms", "<= 50 ms", o <= 0.05))


def hang_suite(window):
    return f"""[suite]
name = "hang"
image = "demo"
stall_window = "{window}"
[driver.hang_init]
source = "{ROOT}/scenarios/demo/drivers/hang_init"
[[scenario]]
name = "spins"
expect = "hang"
steps = [
  {{ install_driver = {{ driver = "hang_init" }} }},
  {{ reboot = {{ times = 1, timeout = "90s" }} }},
]
"""


def hang_rows(rows):
    """Hang verdict: the reboot step into a driver that spins in its init, with the
    stall detector at its default window and with it off (then the kernel's lockup
    report or the step timeout calls it), alternated round by round."""
    on, off = [], []
    for _ in range(ROUNDS if wanted("stall") else 0):
        for window, out in (("10s", on), ("off", off)):
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "suite.toml")
                with open(path, "w") as f:
                    f.write(hang_suite(window))
                proc = subprocess.run([BOOTGATE, "run", path, "--accel", ACCEL, "-q", "--allow-outside-paths",
                                       "--out", os.path.join(tmp, "r")], capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"the hang suite did not pass ({proc.returncode}): {proc.stderr}")
                with open(os.path.join(tmp, "r", "latest", "run.json")) as f:
                    run = json.load(f)
                step = [st for st in run["scenarios"][0]["steps"] if st["kind"] == "reboot"][0]
                if step["outcome"] != "hang":
                    sys.exit(f"the hang suite's reboot was {step['outcome']}, not a hang")
                out.append(step["duration_ms"] / 1000)
    if on:
        a, b = statistics.median(on), statistics.median(off)
        rows.append(("hang verdict: reboot into a spinning init to verdict, stall detector (10 s window) / off",
                     f"{a:.1f} s / {b:.1f} s", f"{a:.1f} s", "stall window + evidence, < kernel report", a < b))


FUZZ_SECONDS = int(os.environ.get("BENCH_FUZZ_SECONDS", "120"))
# The last stretch of a campaign, in progress lines (one per 5 s), over which the
# steady rate is taken: after the first crash's minimization, which runs on one VM.
FUZZ_STEADY_LINES = 6


def fuzz_rates(restore_every):
    """One campaign from good.content with 2 VMs: (executions per second over the
    whole campaign, over its last FUZZ_STEADY_LINES progress lines)."""
    with tempfile.TemporaryDirectory() as tmp:
        demo = os.path.join(ROOT, "scenarios", "demo")
        proc = subprocess.run([BOOTGATE, "fuzz-content", os.path.join(demo, "suite.toml"), "--driver", "demo_sensor",
                               "--format", os.path.join(demo, "content", "format.toml"),
                               "--seed", os.path.join(demo, "content", "good.content"),
                               "--time", f"{FUZZ_SECONDS}s", "-j", "2", "--accel", ACCEL,
                               "--restore-every", str(restore_every), "-o", os.path.join(tmp, "f")],
                              capture_output=True, text=True)
        if proc.returncode not in (0, 1):
            sys.exit(f"fuzz-content failed ({proc.returncode}): {proc.stderr}")
        with open(os.path.join(tmp, "f", "latest", "report.json")) as f:
            report = json.load(f)
        counts = []
        for line in (proc.stdout + proc.stderr).splitlines():
            words = line.split()
            if line.startswith("fuzz: ") and len(words) > 2 and words[1].isdigit() and words[2] == "executions":
                counts.append(int(words[1]))
        steady = None
        if len(counts) > FUZZ_STEADY_LINES:
            steady = (counts[-1] - counts[-1 - FUZZ_STEADY_LINES]) / (5.0 * FUZZ_STEADY_LINES)
        return report["execs"] / report["seconds"], steady


def fuzz_rows(rows):
    """Persistent fuzzing (the guest kept for 64 executions) against restoring before
    every execution, same campaign, alternated round by round. Fewer rounds than the
    others: each campaign is FUZZ_SECONDS long."""
    kept, restored = [], []
    for _ in range(max(1, ROUNDS // 2) if wanted("fuzz") else 0):
        kept.append(fuzz_rates(64))
        restored.append(fuzz_rates(1))
    if kept:
        k = statistics.median(r[0] for r in kept)
        r = statistics.median(x[0] for x in restored)
        rows.append((f"fuzz executions per second, 2 VMs, {FUZZ_SECONDS} s campaign: kept guest (K=64) / restore every execution",
                     f"{k:.1f} / {r:.2f}", f"{k / r:.0f}x", ">= 20 /s", k >= 20))
        steady = [x[1] for x in kept if x[1] is not None]
        if steady:
            s = statistics.median(steady)
            rows.append((f"fuzz executions per second, kept guest, last {5 * FUZZ_STEADY_LINES} s of the campaign (after minimizing)",
                         f"{s:.1f} /s", f"{s:.1f} /s", ">= 20 /s", s >= 20))


# Issue 18: the memory dump of the demo guest's crash (the Channel File 291 loop's
# first crash, 256 MiB guest) in each format QEMU can write, through bootgate's own
# image manifest setting (guest.dump_format).
DUMP_FORMATS = ["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy"]
DUMP_SUITE = f"""[suite]
name = "dump"
image = "./image.toml"
[driver.demo_sensor]
source = "{ROOT}/scenarios/demo/drivers/demo_sensor"
content_file = "demo_sensor.content"
reload = "echo 1 > /sys/module/demo_sensor/parameters/reload"
[[scenario]]
name = "cf291"
expect = "boot_loop"
boot_loop_boots = 2
steps = [
  {{ install_driver = {{ driver = "demo_sensor", load_now = true }} }},
  {{ apply_content = {{ driver = "demo_sensor", file = "{ROOT}/scenarios/demo/content/cf291-21-fields.content", reload = true }} }},
]
"""
PAGE = 4096


def dump_variant(tmp, manifest, fmt):
    """The demo manifest in `tmp` (its files by absolute path) with guest.dump_format."""
    image_dir = os.path.dirname(manifest)
    with open(manifest) as f:
        text = f.read()
    for name in ["vmlinuz", "initrd.img", "system.qcow2"]:
        text = text.replace(f'"{name}"', json.dumps(os.path.join(image_dir, name)))
    if "\n[guest]\n" not in text:
        sys.exit("the demo manifest has no [guest] table")
    text = text.replace("\n[guest]\n", f'\n[guest]\ndump_format = "{fmt}"\n')
    with open(os.path.join(tmp, "image.toml"), "w") as f:
        f.write(text)
    shutil.copy(os.path.join(image_dir, "build-info.json"), tmp)


def dump_run(manifest, fmt, keep_to=None):
    """One crash run with `fmt`: (format written, bytes, seconds QEMU took, note);
    the dump file is moved to `keep_to` when given."""
    with tempfile.TemporaryDirectory() as tmp:
        dump_variant(tmp, manifest, fmt)
        path, out_dir = write_suite(tmp, DUMP_SUITE)
        proc = subprocess.run([BOOTGATE, "run", path, "--accel", ACCEL, "-q", "--out", out_dir, "--jobs", "1",
                               "--allow-outside-paths"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode not in (0, 1):
            sys.exit(f"bootgate failed ({proc.returncode}): {proc.stderr}")
        with open(os.path.join(out_dir, "latest", "run.json")) as f:
            crash = json.load(f)["scenarios"][0]["crashes"][0]
        if crash.get("dump") is None:
            sys.exit(f"no dump with {fmt}: {crash.get('dump_note')}")
        if keep_to:
            shutil.move(os.path.join(out_dir, "latest", crash["dump"]), keep_to)
        return crash["dump_format"], crash["dump_bytes"], crash["dump_ms"] / 1000, crash.get("dump_note")


def elf_pages(path):
    """The guest's memory pages in an ELF core (its PT_LOAD segments), one by one."""
    import struct
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        for i in range(phnum):
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
            if p_type != 1:
                continue
            f.seek(p_offset)
            for _ in range(p_filesz // PAGE):
                yield f.read(PAGE)


def page_compressors():
    """Each kdump format's page compressor as QEMU calls it (dump/dump.c): zlib's
    compress2 at Z_BEST_SPEED, lzo1x_1_compress, snappy_compress; from the host's
    own libraries (liblzo2, libsnappy), so formats this QEMU was built without can
    still be estimated on the same memory."""
    import ctypes
    import zlib
    found = {"kdump-zlib": lambda page: len(zlib.compress(page, 1))}
    try:
        lzo = ctypes.CDLL("liblzo2.so.2")
        wrkmem = ctypes.create_string_buffer(16384 * 8)  # LZO1X_1_MEM_COMPRESS
        out = ctypes.create_string_buffer(PAGE + PAGE // 16 + 64 + 3)
        out_len = ctypes.c_size_t()

        def lzo_size(page):
            if lzo.lzo1x_1_compress(page, ctypes.c_size_t(PAGE), out, ctypes.byref(out_len), wrkmem) != 0:
                raise RuntimeError("lzo1x_1_compress failed")
            return out_len.value
        found["kdump-lzo"] = lzo_size
    except OSError:
        pass
    try:
        snappy = ctypes.CDLL("libsnappy.so.1")
        snappy.snappy_max_compressed_length.restype = ctypes.c_size_t
        out = ctypes.create_string_buffer(snappy.snappy_max_compressed_length(ctypes.c_size_t(PAGE)))
        out_len = ctypes.c_size_t()

        def snappy_size(page):
            out_len.value = len(out)
            if snappy.snappy_compress(page, ctypes.c_size_t(PAGE), out, ctypes.byref(out_len)) != 0:
                raise RuntimeError("snappy_compress failed")
            return out_len.value
        found["kdump-snappy"] = snappy_size
    except OSError:
        pass
    return found


def estimate_kdumps(elf):
    """Per format, (estimated kdump bytes, CPU seconds compressing): QEMU's layout
    (dump.c write_dump_pages) is a 24-byte descriptor per page, one shared zero
    page, each other page compressed on its own and kept raw when that is no
    smaller, after two bitmaps of a bit per page and the headers."""
    compressors = page_compressors()
    sizes = {name: 0 for name in compressors}
    seconds = {name: 0.0 for name in compressors}
    pages = 0
    zero = bytes(PAGE)
    for page in elf_pages(elf):
        pages += 1
        if page == zero:
            continue
        for name, compress in compressors.items():
            start = time.perf_counter()
            n = compress(page)
            seconds[name] += time.perf_counter() - start
            sizes[name] += min(n, PAGE)
    fixed = 24 * pages + 2 * (pages // 8) + PAGE + 2 * PAGE
    return {name: (sizes[name] + fixed, seconds[name]) for name in compressors}, pages


def dump_rows(rows):
    if not wanted("dumps"):
        return
    manifest = demo_manifest()
    written = {fmt: [] for fmt in DUMP_FORMATS}
    notes = {}
    keep = tempfile.mkdtemp(prefix="bench-dump-")
    elf = os.path.join(keep, "crash.elf")
    try:
        for r in range(ROUNDS):
            for fmt in DUMP_FORMATS:
                got, size, seconds, note = dump_run(manifest, fmt, keep_to=elf if fmt == "elf" and r == 0 else None)
                if got != fmt:
                    notes[fmt] = note
                    continue
                written[fmt].append((size, seconds))
        estimates, pages = estimate_kdumps(elf)
    finally:
        shutil.rmtree(keep, ignore_errors=True)
    mib = 1024 * 1024
    elf_size = statistics.median(s for s, _ in written["elf"])
    elf_time = statistics.median(t for _, t in written["elf"])
    rows.append((f"memory dump of the demo guest's crash (256 MiB, {pages} pages), elf: size / time QEMU took",
                 f"{elf_size / mib:.1f} MiB / {elf_time:.2f} s", "100%", "(the reference)", True))
    for fmt in DUMP_FORMATS[1:]:
        estimate, cpu = estimates.get(fmt, (None, None))
        est = f"; per-page estimate {estimate / mib:.1f} MiB, {cpu:.2f} s CPU compressing" if estimate else ""
        if written[fmt]:
            size = statistics.median(s for s, _ in written[fmt])
            seconds = statistics.median(t for _, t in written[fmt])
            rows.append((f"memory dump, {fmt}: size / time QEMU took", f"{size / mib:.1f} MiB / {seconds:.2f} s{est}",
                         f"{size / elf_size:.1%} of elf", "<= 25% of elf", size <= elf_size / 4))
        elif estimate:
            rows.append((f"memory dump, {fmt}: not written by this QEMU ({notes.get(fmt, '')}); estimated from the elf dump's pages",
                         f"{estimate / mib:.1f} MiB, {cpu:.2f} s CPU compressing", f"{estimate / elf_size:.1%} of elf (estimate)",
                         "<= 25% of elf", estimate <= elf_size / 4))


def main():
    global BASE
    manifest = demo_manifest()
    BASE = os.path.join(os.path.dirname(manifest), "system.qcow2")
    rows = []

    # 1. Cold boot-to-ready: bootgate vs a minimal script on the same command line,
    #    alternated round by round so both see the same machine load.
    ours, minimal = [], []
    for _ in range(ROUNDS if wanted("cold") else 0):
        _, run, _ = run_suite(BOOT_SUITE, "--jobs", "1")
        # The boot step spans overlay creation, QEMU start, QMP, console and agent
        # connection and the wait for ready: the same span the minimal script times.
        ours.append(run["scenarios"][0]["steps"][0]["duration_ms"] / 1000)
        minimal.append(minimal_boot_to_agent(run["qemu"]["argv"][0]["argv"]))
    if ours:
        ratio = statistics.median(ours) / statistics.median(minimal)
        rows.append(("cold boot-to-ready, bootgate / minimal script", f"{statistics.median(ours):.2f} s / {statistics.median(minimal):.2f} s",
                   f"{ratio:.3f}", "<= 1.05", ratio <= 1.05))

    # 2. Restore from the saved ready state vs a cold boot, both from the moment the
    #    scenario asks for its VM to an answering agent (a restored "boot" records
    #    exactly that span). Two restore figures: a QEMU started on demand (the
    #    first scenario of a worker), and a standby QEMU started while the worker's
    #    previous scenario ran (every later scenario): what scenarios wait in a run.
    on_demand, standby, cold = [], [], []
    for _ in range(ROUNDS if wanted("restore") else 0):
        _, run, _ = run_suite(RESTORE_SUITE, "--jobs", "1")
        for scenario in run["scenarios"]:
            boot = scenario["boots"][0]
            if not boot.get("restored"):
                sys.exit("the restore suite did not start from a saved state")
            (standby if boot.get("standby") else on_demand).append(boot["ready_ms"] / 1000)
        _, run, _ = run_suite(BOOT_SUITE, "--jobs", "1")
        cold.append(run["scenarios"][0]["steps"][0]["duration_ms"] / 1000)
    if cold:
        c = statistics.median(cold)
        if standby:
            ratio = c / statistics.median(standby)
            rows.append((f"restore-to-ready (standby QEMU, {len(standby)} restores) vs cold boot-to-ready",
                         f"{statistics.median(standby):.3f} s / {c:.2f} s", f"{ratio:.1f}x", ">= 50x", ratio >= 50))
        if on_demand:
            ratio = c / statistics.median(on_demand)
            rows.append((f"restore-to-ready (QEMU started on demand, {len(on_demand)} restores) vs cold boot-to-ready",
                         f"{statistics.median(on_demand):.3f} s / {c:.2f} s", f"{ratio:.1f}x", ">= 50x", ratio >= 50))

    # 3. Parallel efficiency: the same suite with --jobs 1 and --jobs 2, alternated
    #    round by round (this machine is shared: a single pair moved between 81% and
    #    94%), medians of the rounds.
    serial, parallel, peaks = [], [], []
    for _ in range(ROUNDS if wanted("parallel") else 0):
        t1, _, _ = run_suite(PARALLEL_SUITE, "--jobs", "1")
        t2, _, peak = run_suite(PARALLEL_SUITE, "--jobs", "2")
        serial.append(t1)
        parallel.append(t2)
        peaks.append(peak)
    if serial:
        t1, t2, peak = statistics.median(serial), statistics.median(parallel), max(peaks)
        efficiency = t1 / (2 * t2)
        rows.append(("suite wall time, --jobs 1 vs --jobs 2 (parallel efficiency)", f"{t1:.1f} s / {t2:.1f} s",
                     f"{efficiency:.0%}", ">= 85%", efficiency >= 0.85))
        # 4. Peak memory of bootgate itself while supervising the parallel run.
        rows.append(("peak RSS of bootgate during the --jobs 2 runs (highest)", f"{peak / 1024:.1f} MiB", f"{peak / 1024:.1f} MiB", "<= 50 MiB", peak / 1024 <= 50))

    # 5. Panic-to-verdict latency: the runner records it per crash (detect_ms).
    if wanted("panic"):
        _, run, _ = run_suite(CRASH_SUITE, "--jobs", "1", "--allow-outside-paths")
        latencies = [c["detect_ms"] for s in run["scenarios"] for c in s["crashes"]]
        median = statistics.median(latencies)
        rows.append(("panic-to-verdict latency (median of %d crashes)" % len(latencies), f"{median:.0f} ms", f"{median:.0f} ms", "<= 100 ms", median <= 100))

    whole_process_rows(rows)
    hang_rows(rows)
    dump_rows(rows)
    fuzz_rows(rows)

    # 6. Overlay creation: 20 GiB sparse base vs 64 MiB base.
    if wanted("overlay"):
        big, small = overlay_seconds(["20G", "64M"])
        ratio = big / small
        rows.append(("overlay creation, 20 GiB base / 64 MiB base", f"{big * 1000:.1f} ms / {small * 1000:.1f} ms", f"{ratio:.2f}", "~1.0 (within noise)", 0.8 <= ratio <= 1.25))

    print(f"bootgate benchmarks: {ROUNDS} rounds, accel {ACCEL}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print()
    print("| measure | figures | ratio / value | goal | met |")
    print("|---|---|---|---|---|")
    for name, figures, value, goal, met in rows:
        print(f"| {name} | {figures} | {value} | {goal} | {'yes' if met else 'NO'} |")


if __name__ == "__main__":
    main()
