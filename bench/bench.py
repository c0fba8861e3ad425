#!/usr/bin/env python3
"""kfaas benchmarks: proxy throughput, lambda overhead, cold start, memory.

Run through bench/run.sh (which builds and installs what this needs). Nothing here is a
pass/fail test: every figure is printed beside an anchor measured in the same run, and each
comparison is a ratio against that anchor. Each measurement is repeated (--runs, default 3)
and reported as the median with its min..max spread.

Usage: bench/bench.py --kfaas target/release/kfaas --backend bench/backend/target/release/...
       [--runs 3] [--duration 10] [--only proxy,lambda,cold,memory] [--out FILE.json]
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
HELLO_SRC = os.path.join(REPO, "examples", "hello", "src")


# ---------------------------------------------------------------------------------------------
# Small helpers: processes, ports, waiting, statistics.


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_line(path, pattern, timeout=60.0, proc=None):
    """Waits until the file at `path` has a line matching `pattern`; returns the match."""
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    m = regex.search(line)
                    if m:
                        return m
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            with open(proc.err, errors="replace") as f:
                tail = f.read()[-2000:]
            raise RuntimeError(f"{proc.name} exited ({proc.poll()}): {tail}")
        time.sleep(0.02)
    raise RuntimeError(f"no line matching {pattern!r} in {path} after {timeout}s")


class Proc:
    """A child process in its own process group, with stdout and stderr in files."""

    def __init__(self, name, argv, workdir, env=None, cwd=None):
        self.name = name
        self.out = os.path.join(workdir, f"{name}.out")
        self.err = os.path.join(workdir, f"{name}.err")
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                env=full_env, cwd=cwd, start_new_session=True,
            )
        self.pid = self.popen.pid

    def poll(self):
        return self.popen.poll()

    def stop(self):
        """SIGINT (kfaas stops its instances on it), then SIGKILL to the group if needed."""
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGINT)
                self.popen.wait(timeout=5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)  # its own group: only what it started
        except ProcessLookupError:
            pass
        self.popen.wait()


CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_pids(pgid):
    """The processes of a process group (nginx: its master and worker)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:  # fields[0] is the state; pgrp is the 5th field of stat
                pids.append(int(entry))
    return pids


def cpu_seconds(pids):
    """User + system CPU time of these processes (all their threads, not their children)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLK_TCK


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summary(values):
    """Median with the spread of the repeats."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
        "spread_pct": 100.0 * (max(values) - min(values)) / statistics.median(values)
        if statistics.median(values) else 0.0,
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def wait_quiet(max_load, max_wait):
    """Waits (up to max_wait s) for the 1-minute load average to drop under max_load."""
    deadline = time.monotonic() + max_wait
    while loadavg() > max_load and time.monotonic() < deadline:
        time.sleep(5)
    return loadavg()


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


# ---------------------------------------------------------------------------------------------
# wrk


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(url, connections, duration, threads=1, script=None):
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        argv += ["-s", script]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        result[f"p{pct}_ms"] = to_ms(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = sum(map(int, m.groups())) if m else 0
    if result["non_2xx"] or result["socket_errors"]:
        log(f"  warning: {url}: {result['non_2xx']} non-2xx, {result['socket_errors']} socket errors")
    return result


def wrk_cpu(url, connections, duration, pids):
    """wrk, plus the CPU time the proxy's processes spent per request (in microseconds): a figure
    that depends much less than req/s on what else the machine runs."""
    before = cpu_seconds(pids)
    result = wrk(url, connections, duration)
    result["cpu_us_per_req"] = (cpu_seconds(pids) - before) * 1e6 / max(result["requests"], 1)
    return result


def wrk_summary(samples):
    """Median of each wrk figure over the repeats."""
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "cpu_us_per_req")
    out = {k: summary([s[k] for s in samples]) for k in keys}
    out["non_2xx"] = sum(s["non_2xx"] for s in samples)
    out["socket_errors"] = sum(s["socket_errors"] for s in samples)
    return out


def paired_ratios(samples, label, anchor):
    """`label`'s req/s over `anchor`'s, run by run (both measured in the same round, one after
    the other): the machine's drift between rounds cancels out of each ratio, which it does not
    out of a ratio of medians."""
    ratios = [s["rps"] / a["rps"] for s, a in zip(samples[label], samples[anchor]) if a["rps"] > 0]
    return summary(ratios) if ratios else None


# ---------------------------------------------------------------------------------------------
# kfaas local


def start_kfaas_local(kfaas, folder, workdir, name, extra=()):
    """Starts `kfaas local FOLDER --port 0`; returns (proc, gateway addr, admin addr)."""
    proc = Proc(name, [kfaas, "local", folder, "--port", "0", *extra], workdir)
    try:
        m = wait_line(proc.out, r"serving .* on http://(\S+) \(admin on http://(\S+)\)",
                      timeout=180, proc=proc)
    except BaseException:
        proc.stop()
        raise
    return proc, m.group(1), m.group(2)


def instances(admin, function="default/hello"):
    _, body = http_get(f"http://{admin}/metrics")
    pattern = re.compile(r'^kfaas_gateway_instances\{[^}]*function="' + re.escape(function)
                         + r'"[^}]*\}\s+(\S+)', re.M)
    m = pattern.search(body.decode())
    return float(m.group(1)) if m else 0.0


def cold_starts(admin, function="default/hello"):
    _, body = http_get(f"http://{admin}/metrics")
    pattern = re.compile(r'^kfaas_gateway_cold_starts_total\{[^}]*function="' + re.escape(function)
                         + r'"[^}]*\}\s+(\S+)', re.M)
    m = pattern.search(body.decode())
    return float(m.group(1)) if m else 0.0


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def http_function_folder(root, backend):
    """An `http` Function running the bench backend, pinned to one instance, on ANY /{proxy+}.

    `concurrency: 1000` matches HAProxy's `maxconn 1000` for its server (nginx sets no limit):
    with the default of 100, wrk's connections beyond 100 would be held by the activator, and the
    benchmark would measure queueing rather than proxying."""
    folder = os.path.join(root, "proxy-app")
    write(os.path.join(folder, "app.yaml"), f"""\
apiVersion: kfaas.dev/v1alpha1
kind: Function
metadata:
  name: backend
spec:
  runtime: provided
  protocol: http
  command: [{json.dumps(backend)}]
  code:
    path: {json.dumps(os.path.dirname(backend))}
  replicas: 1
  concurrency: 1000
---
apiVersion: kfaas.dev/v1alpha1
kind: Route
metadata:
  name: all
spec:
  api: bench
  methods: [ANY]
  path: /{{proxy+}}
  function: backend
---
apiVersion: kfaas.dev/v1alpha1
kind: Stage
metadata:
  name: bench
spec:
  api: bench
""")
    return folder


# The bench's Lambda handler: examples/hello's handler, timing itself. `?stats=1` answers the
# median of its own durations (in microseconds) since the last `?stats=1`, without timing that.
TIMED_HANDLER = """\
const hello = require(process.env.HELLO_SRC + "/index.js").handler;
let times = [];
exports.handler = async (event, context) => {
  const q = event.queryStringParameters || {};
  if (q.stats) {
    const sorted = times.slice().sort((a, b) => a - b);
    const body = { count: sorted.length, p50_us: sorted[Math.floor(sorted.length / 2)] || 0 };
    times = [];
    return { statusCode: 200, body: JSON.stringify(body) };
  }
  const start = process.hrtime.bigint();
  const result = await hello(event, context);
  times.push(Number(process.hrtime.bigint() - start) / 1000);
  return result;
};
"""


def hello_folder(root, name, idle_seconds=600, timed=False):
    """The hello example (Node.js); `timed` wraps its handler so that it times itself."""
    folder = os.path.join(root, name)
    code = os.path.join(folder, "src")
    if timed:
        write(os.path.join(code, "index.js"), TIMED_HANDLER)
    else:
        os.makedirs(folder, exist_ok=True)
        shutil.copytree(HELLO_SRC, code)
    env = f"\n  environment:\n    HELLO_SRC: {json.dumps(HELLO_SRC)}" if timed else ""
    write(os.path.join(folder, "hello.yaml"), f"""\
apiVersion: kfaas.dev/v1alpha1
kind: Function
metadata:
  name: hello
spec:
  runtime: nodejs
  handler: index.handler
  code:
    path: ./src
  timeoutSeconds: 10{env}
  scaling:
    maxReplicas: 1
    idleTimeoutSeconds: {idle_seconds}
---
apiVersion: kfaas.dev/v1alpha1
kind: Route
metadata:
  name: hello
spec:
  api: hello
  methods: [GET]
  path: /hello
  function: hello
---
apiVersion: kfaas.dev/v1alpha1
kind: Stage
metadata:
  name: dev
spec:
  api: hello
""")
    return folder


# ---------------------------------------------------------------------------------------------
# 2. HTTP proxy throughput

# Each proxy may keep up to 1,000 connections to the backend, more than wrk opens to it: HAProxy's
# server `maxconn 1000`, the Function's `concurrency: 1000`, and nginx's `keepalive 1000` (the idle
# connections it keeps per worker; at its old setting of 64, wrk's 128 connections made nginx open
# and close upstream connections all the time, and its req/s fell by a fifth).


HAPROXY_CFG = """\
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend bench
    bind 127.0.0.1:{port}
    default_backend backend
backend backend
    http-reuse always
    server b1 127.0.0.1:{backend_port} maxconn 1000
"""

# The ceiling: HAProxy relaying bytes (`mode tcp`), one server connection per client connection,
# no HTTP parsed or written. Any HTTP proxy does this much per request and more (the same four
# loopback segments, the same receive and send per direction), so its req/s bounds what an HTTP
# proxy can reach here; the targets' ratios are read against it.
HAPROXY_TCP_CFG = """\
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend relay
    bind 127.0.0.1:{port}
    default_backend backend
backend backend
    server b1 127.0.0.1:{backend_port} maxconn 1000
"""

NGINX_CFG = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-body;
    proxy_temp_path {dir}/nginx-proxy;
    fastcgi_temp_path {dir}/nginx-fastcgi;
    uwsgi_temp_path {dir}/nginx-uwsgi;
    scgi_temp_path {dir}/nginx-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 1000;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


RELAY = "haproxy mode tcp (byte relay, nbthread 1)"


def bench_proxy(args, work, results):
    log("== proxy throughput")
    backend_port = free_port()
    procs = []
    try:
        backend = Proc("backend", [args.backend], work, env={"PORT": str(backend_port)})
        procs.append(backend)
        wait_port(backend_port)

        targets = {"backend (direct, no proxy)": f"http://127.0.0.1:{backend_port}/bench"}
        pids = {"backend (direct, no proxy)": lambda: [backend.pid]}

        hp_port = free_port()
        cfg = os.path.join(work, "haproxy.cfg")
        write(cfg, HAPROXY_CFG.format(port=hp_port, backend_port=backend_port))
        procs.append(Proc("haproxy", ["haproxy", "-db", "-f", cfg], work))
        wait_port(hp_port)
        targets["haproxy (nbthread 1)"] = f"http://127.0.0.1:{hp_port}/bench"
        haproxy = procs[-1]
        pids["haproxy (nbthread 1)"] = lambda: [haproxy.pid]

        relay_port = free_port()
        cfg = os.path.join(work, "haproxy-tcp.cfg")
        write(cfg, HAPROXY_TCP_CFG.format(port=relay_port, backend_port=backend_port))
        procs.append(Proc("haproxy-tcp", ["haproxy", "-db", "-f", cfg], work))
        wait_port(relay_port)
        targets[RELAY] = f"http://127.0.0.1:{relay_port}/bench"
        relay = procs[-1]
        pids[RELAY] = lambda: [relay.pid]

        ng_port = free_port()
        cfg = os.path.join(work, "nginx.conf")
        write(cfg, NGINX_CFG.format(port=ng_port, backend_port=backend_port, dir=work))
        procs.append(Proc("nginx", ["nginx", "-c", cfg, "-p", work], work))
        wait_port(ng_port)
        targets["nginx (worker_processes 1)"] = f"http://127.0.0.1:{ng_port}/bench"
        nginx = procs[-1]
        pids["nginx (worker_processes 1)"] = lambda: group_pids(nginx.pid)

        folder = http_function_folder(work, args.backend)
        variants = [
            ("kfaas --no-access-log", "nolog", ["--no-access-log"]),
            ("kfaas --no-access-log --worker-threads 1", "nolog-wt1",
             ["--no-access-log", "--worker-threads", "1"]),
            ("kfaas --no-access-log --worker-threads 2", "nolog-wt2",
             ["--no-access-log", "--worker-threads", "2"]),
            ("kfaas (access log on)", "log", []),
            ("kfaas (access log on) --worker-threads 1", "log-wt1", ["--worker-threads", "1"]),
        ]
        wanted = args.variants.split(",")
        binaries = [("", args.kfaas)]
        for other in args.kfaas_base:  # other builds, measured in the same rounds
            name, _, path = other.rpartition("=")
            binaries.append(("@" + (name or "base"), os.path.abspath(path)))
        for suffix, binary in binaries:
            for label, name, flags in variants:
                if name not in wanted:
                    continue
                label = label.replace("kfaas", "kfaas" + suffix, 1)
                proc, addr, _admin = start_kfaas_local(binary, folder, work,
                                                       f"kfaas{suffix}-{name}", flags)
                procs.append(proc)
                targets[label] = f"http://{addr}/bench"
                pids[label] = lambda proc=proc: [proc.pid]  # the gateway, not its backend child

        for label, url in targets.items():  # warm up: instances started, connections made
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http_get(url)[0] == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{label} does not answer 200 at {url}")
                time.sleep(0.1)
            wrk(url, max(args.connections), 2)

        levels = {}
        for connections in args.connections:
            log(f"  {connections} connections")
            samples = {label: [] for label in targets}
            for run in range(args.runs):  # interleaved, so drifts of the machine hit all alike
                load = wait_quiet(args.max_load, args.max_wait)
                log(f"  run {run + 1}/{args.runs} (load {load:.2f})")
                for label, url in targets.items():
                    s = wrk_cpu(url, connections, args.duration, pids[label]())
                    s["load"] = loadavg()
                    samples[label].append(s)
                    log(f"    {label:45} {s['rps']:>10.0f} req/s  p50 {s['p50_ms']:.3f} ms"
                        f"  p99 {s['p99_ms']:.3f} ms  CPU {s['cpu_us_per_req']:.1f} us/req")
            levels[str(connections)] = {
                "wrk": f"wrk -t1 -c{connections} -d{args.duration}s --latency URL",
                "samples": samples,
                "summary": {label: wrk_summary(s) for label, s in samples.items()},
                "paired": {
                    label: {anchor: paired_ratios(samples, label, anchor)
                            for anchor in ("haproxy (nbthread 1)", "nginx (worker_processes 1)")}
                    for label in samples if label.startswith("kfaas") or label == RELAY
                },
            }
        results["proxy"] = {"levels": levels}
    finally:
        for p in reversed(procs):
            p.stop()


# ---------------------------------------------------------------------------------------------
# 3. Lambda overhead at concurrency 1


POST_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{"rawPath": "/hello", "queryStringParameters": {"name": "bench"}}'
wrk.headers["Content-Type"] = "application/json"
"""

REPORT_RE = re.compile(r"REPORT RequestId: \S+\s+Duration: ([\d.]+) ms")


def report_durations(path, skip):
    """Duration figures of the REPORT lines in `path`, after the first `skip` of them."""
    with open(path, errors="replace") as f:
        values = [float(m.group(1)) for m in map(REPORT_RE.search, f) if m]
    return values[skip:]


def count_reports(path):
    return len(report_durations(path, 0))


def handler_stats(url):
    _, body = http_get(url)
    return json.loads(body)


def bench_lambda(args, work, results):
    log("== lambda overhead (concurrency 1)")
    procs = []
    try:
        folder = hello_folder(work, "hello-timed", timed=True)
        gw_proc, addr, _ = start_kfaas_local(args.kfaas, folder, work, "kfaas-hello",
                                             ["--no-access-log"])
        procs.append(gw_proc)
        gw_url = f"http://{addr}/hello?name=bench"

        rt_proc = Proc("runtime", [args.kfaas, "runtime", "--listen", "127.0.0.1:0",
                                   "--runtime", "nodejs", "--code", os.path.join(folder, "src"),
                                   "--handler", "index.handler"], work,
                       env={"HELLO_SRC": HELLO_SRC})
        procs.append(rt_proc)
        rt_addr = wait_line(rt_proc.out, r"KFAAS_LISTENING (\S+)", proc=rt_proc).group(1)
        wait_line(rt_proc.out, r"KFAAS_READY", proc=rt_proc)
        rt_url = f"http://{rt_addr}/2015-03-31/functions/function/invocations"
        script = os.path.join(work, "post.lua")
        write(script, POST_SCRIPT)

        backend_port = free_port()
        backend = Proc("backend-floor", [args.backend], work, env={"PORT": str(backend_port)})
        procs.append(backend)
        wait_port(backend_port)
        floor_url = f"http://127.0.0.1:{backend_port}/"

        http_get(gw_url, timeout=30)  # cold start out of the way
        wrk(gw_url, 1, 2)
        wrk(rt_url, 1, 2, script=script)
        wrk(floor_url, 1, 2)

        def rt_stats():  # the runtime's handler answers the stats event the same way
            req = urllib.request.Request(
                rt_url, data=b'{"queryStringParameters": {"stats": "1"}}', method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(json.loads(r.read())["body"])

        def gw_stats():
            return handler_stats(f"http://{addr}/hello?stats=1")

        samples = {"gateway": [], "runtime": [], "floor": []}
        for run in range(args.runs):
            load = wait_quiet(args.max_load, args.max_wait)
            log(f"  run {run + 1}/{args.runs} (load {load:.2f})")

            gw_stats()
            before = count_reports(gw_proc.out)
            s = wrk(gw_url, 1, args.duration)
            s["report_p50_ms"] = statistics.median(report_durations(gw_proc.out, before))
            s["handler_p50_ms"] = gw_stats()["p50_us"] / 1000.0
            samples["gateway"].append(s)

            rt_stats()
            before = count_reports(rt_proc.out)
            s = wrk(rt_url, 1, args.duration, script=script)
            s["report_p50_ms"] = statistics.median(report_durations(rt_proc.out, before))
            s["handler_p50_ms"] = rt_stats()["p50_us"] / 1000.0
            samples["runtime"].append(s)

            samples["floor"].append(wrk(floor_url, 1, args.duration))
            g, r, f = samples["gateway"][-1], samples["runtime"][-1], samples["floor"][-1]
            log(f"    via gateway p50 {g['p50_ms']:.3f} ms (REPORT {g['report_p50_ms']:.3f},"
                f" handler {g['handler_p50_ms']:.3f}); direct runtime p50 {r['p50_ms']:.3f} ms"
                f" (REPORT {r['report_p50_ms']:.3f}); plain HTTP floor p50 {f['p50_ms']:.3f} ms")

        def over(key, minus):
            return summary([s["p50_ms"] - s[minus] if isinstance(minus, str) else
                            s["p50_ms"] - minus[i]["p50_ms"]
                            for i, s in enumerate(samples[key])])

        results["lambda"] = {
            "wrk": f"wrk -t1 -c1 -d{args.duration}s --latency URL",
            "samples": samples,
            "summary": {
                "gateway_p50_ms": summary([s["p50_ms"] for s in samples["gateway"]]),
                "gateway_p99_ms": summary([s["p99_ms"] for s in samples["gateway"]]),
                "runtime_p50_ms": summary([s["p50_ms"] for s in samples["runtime"]]),
                "runtime_p99_ms": summary([s["p99_ms"] for s in samples["runtime"]]),
                "floor_p50_ms": summary([s["p50_ms"] for s in samples["floor"]]),
                "report_duration_p50_ms": summary([s["report_p50_ms"] for s in samples["gateway"]]),
                "handler_self_p50_ms": summary([s["handler_p50_ms"] for s in samples["gateway"]]),
                "overhead_over_report_ms": over("gateway", "report_p50_ms"),
                "overhead_over_handler_ms": over("gateway", "handler_p50_ms"),
                "gateway_part_ms": over("gateway", samples["runtime"]),
                "runtime_over_report_ms": over("runtime", "report_p50_ms"),
                "runtime_over_handler_ms": over("runtime", "handler_p50_ms"),
            },
        }
    finally:
        for p in reversed(procs):
            p.stop()


# ---------------------------------------------------------------------------------------------
# 4. Cold start


def bench_cold(args, work, results):
    log("== cold start (hello, Node.js, 0 -> first response)")
    node, node_shell = [], []
    # `kfaas local` gives instances a defined environment (src/local/instance_env.rs), not this
    # shell's: the anchor runs node the same way. This shell's environment may hold variables
    # that cost node start-up time (NODE_EXTRA_CA_CERTS: ~40 ms on the benchmark machine); node
    # started in it is reported beside, for comparison.
    instance_env = {k: v for k, v in os.environ.items()
                    if k in ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE",
                             "TMPDIR") or k.startswith("LC_")}

    def node_e0():  # the anchors, taken beside each cold start so that all see the same load
        for into, env in ((node, instance_env), (node_shell, None)):
            t = time.perf_counter()
            subprocess.run(["node", "-e", "0"], check=True, env=env)
            into.append((time.perf_counter() - t) * 1000)

    folder = hello_folder(work, "hello-cold", idle_seconds=1)
    proc, addr, admin = start_kfaas_local(args.kfaas, folder, work, "kfaas-cold",
                                          ["--no-access-log"])
    cold = []
    try:
        host, port = addr.rsplit(":", 1)
        counted_before = cold_starts(admin)
        for i in range(args.cold_starts):
            deadline = time.monotonic() + 60
            while instances(admin) != 0:
                if time.monotonic() > deadline:
                    raise RuntimeError("hello did not scale to zero in 60 s")
                time.sleep(0.1)
            time.sleep(0.2)  # let the stopped process go entirely
            wait_quiet(args.max_load, 10)
            node_e0()
            time.sleep(0.1)
            t = time.perf_counter()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("GET", "/hello?name=cold")
            resp = conn.getresponse()
            resp.read()
            ms = (time.perf_counter() - t) * 1000
            conn.close()
            if resp.status != 200:
                raise RuntimeError(f"cold start answered {resp.status}")
            counted = cold_starts(admin)
            if counted != counted_before + 1:
                raise RuntimeError(f"try {i + 1} was not a cold start ({ms:.1f} ms): the harness"
                                   " did not wait for zero instances")
            counted_before = counted
            cold.append(ms)
            # The instances gauge is refreshed by the autoscaler's loop (1 s ticks), so right
            # after a cold start it may still read 0: wait to see the instance before waiting
            # for it to go.
            deadline = time.monotonic() + 10
            while instances(admin) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            log(f"  cold start {i + 1}/{args.cold_starts}: {ms:.1f} ms, node -e 0 {node[-1]:.1f} ms"
                f" ({node_shell[-1]:.1f} ms in this shell's environment)"
                f" (load {loadavg():.2f})")
        _, metrics = http_get(f"http://{admin}/metrics")
        m = re.search(r'^kfaas_gateway_cold_starts_total\{[^}]*\}\s+(\S+)', metrics.decode(), re.M)
        init = []
        with open(proc.out, errors="replace") as f:
            for line in f:
                mm = re.search(r"Init Duration: ([\d.]+) ms", line)
                if mm:
                    init.append(float(mm.group(1)))
    finally:
        proc.stop()
    results["cold"] = {
        "cold_start_ms": {"p50": percentile(cold, 50), "p90": percentile(cold, 90),
                          "min": min(cold), "max": max(cold), "all": cold},
        "node_e0_ms": {"p50": percentile(node, 50), "min": min(node), "max": max(node),
                       "all": node},
        "node_e0_shell_env_ms": {"p50": percentile(node_shell, 50), "min": min(node_shell),
                                 "max": max(node_shell), "all": node_shell},
        "init_duration_ms": {"p50": percentile(init, 50), "all": init} if init else None,
        "cold_starts_counted": float(m.group(1)) if m else None,
    }


# ---------------------------------------------------------------------------------------------
# 5. Memory with 10,000 routes


def many_routes_folder(root, count):
    folder = hello_folder(root, f"routes-{count}")
    methods = ["GET", "POST", "PUT", "DELETE"]
    docs = []
    for i in range(count):
        # a mix of static paths, path parameters and greedy paths over count/4 "resources";
        # resource r answers GET, POST, PUT or DELETE by r % 4
        kind = i % 4
        path = [f"/r{i // 4}/items", f"/r{i // 4}/items/{{id}}", f"/r{i // 4}/items/{{id}}/sub",
                f"/r{i // 4}/files/{{proxy+}}"][kind]
        docs.append(f"""\
apiVersion: kfaas.dev/v1alpha1
kind: Route
metadata:
  name: route-{i}
spec:
  api: hello
  methods: [{methods[(i // 4) % len(methods)]}]
  path: {path}
  function: hello
""")
    write(os.path.join(folder, "routes.yaml"), "---\n".join(docs))
    return folder


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0  # MiB
    return out


def measure_memory(args, work, folder, name, paths):
    t = time.perf_counter()
    proc, addr, _ = start_kfaas_local(args.kfaas, folder, work, name, ["--no-access-log"])
    started_ms = (time.perf_counter() - t) * 1000
    try:
        time.sleep(1.0)
        at_start = proc_status(proc.pid)
        for i in range(args.memory_requests):
            status, _ = http_get(f"http://{addr}{paths[i % len(paths)]}", timeout=30)
            if status != 200:
                raise RuntimeError(f"{paths[i % len(paths)]} answered {status}")
        time.sleep(0.5)
        after = proc_status(proc.pid)
    finally:
        proc.stop()
    return {"start_to_serving_ms": started_ms, "at_start": at_start, "after_requests": after}


def bench_memory(args, work, results):
    log("== memory")
    runs = {"hello": [], "routes": []}
    big = many_routes_folder(work, args.routes)
    small = hello_folder(work, "hello-mem")
    big_paths = ["/hello", "/r8/items", "/r124/items/42", "/r2496/items/9/sub", "/r4/files/a/b"]
    for run in range(args.runs):
        wait_quiet(args.max_load, args.max_wait)
        runs["hello"].append(measure_memory(args, work, small, "kfaas-mem-hello", ["/hello"]))
        runs["routes"].append(measure_memory(args, work, big, "kfaas-mem-routes", big_paths))
        h, r = runs["hello"][-1], runs["routes"][-1]
        log(f"  run {run + 1}: hello RSS {h['after_requests']['VmRSS']:.1f} MiB"
            f" (HWM {h['after_requests']['VmHWM']:.1f}); {args.routes} routes RSS"
            f" {r['after_requests']['VmRSS']:.1f} MiB (HWM {r['after_requests']['VmHWM']:.1f}),"
            f" serving after {r['start_to_serving_ms']:.0f} ms")

    def fig(which, when, key):
        return summary([r[when][key] for r in runs[which]])

    results["memory"] = {
        "routes": args.routes,
        "runs": runs,
        "summary": {
            f"{which}_{when}_{key}": fig(which, when, key)
            for which in ("hello", "routes") for when in ("at_start", "after_requests")
            for key in ("VmRSS", "VmHWM")
        } | {
            "routes_start_to_serving_ms": summary(
                [r["start_to_serving_ms"] for r in runs["routes"]]),
            "hello_start_to_serving_ms": summary(
                [r["start_to_serving_ms"] for r in runs["hello"]]),
        },
    }


# ---------------------------------------------------------------------------------------------
# Report


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for name, argv in {"haproxy": ["haproxy", "-v"], "nginx": ["nginx", "-v"],
                       "wrk": ["wrk", "-v"], "node": ["node", "--version"]}.items():
        try:
            p = subprocess.run(argv, capture_output=True, text=True)
            versions[name] = (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            versions[name] = "?"
    rev = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip()
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "kfaas_tree": rev, "versions": versions}


def fmt_proxy_level(level):
    """The proxy benchmark's lines for one number of connections."""
    s = level["summary"]
    lines = []
    lines.append(f"HTTP proxy throughput ({level['wrk']}; median of runs,"
                 " [min..max] req/s)")
    lines.append(f"  {'target':45} {'req/s':>9} {'spread':>17} {'p50 ms':>8} {'p99 ms':>8}"
                 f" {'CPU us/req':>11}")
    for label, v in s.items():
        r = v["rps"]
        lines.append(f"  {label:45} {r['median']:>9.0f} [{r['min']:>6.0f}..{r['max']:>6.0f}]"
                     f" {v['p50_ms']['median']:>8.3f} {v['p99_ms']['median']:>8.3f}"
                     f" {v['cpu_us_per_req']['median']:>11.1f}"
                     + ("  ERRORS" if v["non_2xx"] or v["socket_errors"] else ""))
    hp = s["haproxy (nbthread 1)"]
    ng = s["nginx (worker_processes 1)"]
    lines.append("  ratios (median req/s; p99 ratio > 1 means kfaas is slower at p99):")
    for label, v in s.items():
        if not (label.startswith("kfaas") or label == RELAY):
            continue
        targets = ("", "") if label == RELAY else (" (target >= 1.00)", " (target >= 1.20)")
        lines.append(
            f"    {label:45} /haproxy {v['rps']['median'] / hp['rps']['median']:.2f}"
            f"{targets[0]}  /nginx {v['rps']['median'] / ng['rps']['median']:.2f}"
            f"{targets[1]}  p99/haproxy {v['p99_ms']['median'] / hp['p99_ms']['median']:.2f}"
            f"  p99/nginx {v['p99_ms']['median'] / ng['p99_ms']['median']:.2f}"
            f"  CPU per request /haproxy {v['cpu_us_per_req']['median'] / hp['cpu_us_per_req']['median']:.2f}"
            f" /nginx {v['cpu_us_per_req']['median'] / ng['cpu_us_per_req']['median']:.2f}")
    lines.append(f"    haproxy/nginx {hp['rps']['median'] / ng['rps']['median']:.2f}")
    if RELAY in s:
        lines.append("    (the byte relay parses no HTTP: its ratios bound what any HTTP proxy"
                     " reaches on this machine)")
    paired = level.get("paired", {})
    if paired:
        lines.append("  paired ratios (req/s over the anchor's in the same run; median [min..max]):")
        for label, by_anchor in paired.items():
            h = by_anchor["haproxy (nbthread 1)"]
            n = by_anchor["nginx (worker_processes 1)"]
            if h is None or n is None:
                continue
            lines.append(f"    {label:45} /haproxy {h['median']:.2f} [{h['min']:.2f}..{h['max']:.2f}]"
                         f"  /nginx {n['median']:.2f} [{n['min']:.2f}..{n['max']:.2f}]")
    return lines


def fmt_summary(results):
    lines = []
    if "proxy" in results:
        for level in results["proxy"]["levels"].values():
            lines.extend(fmt_proxy_level(level))
    if "lambda" in results:
        s = results["lambda"]["summary"]
        m = lambda k: s[k]["median"]
        lines.append(f"Lambda overhead, concurrency 1 ({results['lambda']['wrk']}; medians of runs)")
        lines.append(f"  via gateway p50 {m('gateway_p50_ms'):.3f} ms (p99 {m('gateway_p99_ms'):.3f});"
                     f" direct runtime invoke p50 {m('runtime_p50_ms'):.3f} ms"
                     f" (p99 {m('runtime_p99_ms'):.3f}); plain HTTP floor p50 {m('floor_p50_ms'):.3f} ms")
        lines.append(f"  handler REPORT Duration p50 {m('report_duration_p50_ms'):.3f} ms;"
                     f" handler's own time p50 {m('handler_self_p50_ms'):.3f} ms")
        lines.append(f"  overhead = gateway p50 - REPORT Duration p50 = "
                     f"{m('overhead_over_report_ms'):.3f} ms (target <= 0.300)"
                     f" [{s['overhead_over_report_ms']['min']:.3f}..{s['overhead_over_report_ms']['max']:.3f}]")
        lines.append(f"  overhead = gateway p50 - handler's own p50 = "
                     f"{m('overhead_over_handler_ms'):.3f} ms (target <= 0.300)")
        lines.append(f"  split: gateway part (gateway p50 - runtime p50) {m('gateway_part_ms'):.3f} ms;"
                     f" runtime part (runtime p50 - handler's own p50) {m('runtime_over_handler_ms'):.3f} ms")
    if "cold" in results:
        c = results["cold"]
        cs, ne = c["cold_start_ms"], c["node_e0_ms"]
        lines.append(f"Cold start ({len(cs['all'])} tries): p50 {cs['p50']:.1f} ms"
                     f" (p90 {cs['p90']:.1f}, min {cs['min']:.1f}, max {cs['max']:.1f}; target p50 <= 100)")
        lines.append(f"  anchor node -e 0 (in an instance's environment): p50 {ne['p50']:.1f} ms;"
                     f" cold start / node -e 0 = {cs['p50'] / ne['p50']:.2f}")
        if c.get("node_e0_shell_env_ms"):
            lines.append(f"  node -e 0 in the benchmark's own environment: p50"
                         f" {c['node_e0_shell_env_ms']['p50']:.1f} ms")
        if c["init_duration_ms"]:
            lines.append(f"  REPORT Init Duration p50 {c['init_duration_ms']['p50']:.1f} ms")
    if "memory" in results:
        s = results["memory"]["summary"]
        m = lambda k: s[k]["median"]
        lines.append(f"Memory of the kfaas local process (MiB, median of runs)")
        lines.append(f"  hello example:      RSS {m('hello_at_start_VmRSS'):.1f} at start,"
                     f" {m('hello_after_requests_VmRSS'):.1f} after requests;"
                     f" HWM {m('hello_after_requests_VmHWM'):.1f}")
        lines.append(f"  {results['memory']['routes']} routes:       RSS {m('routes_at_start_VmRSS'):.1f} at start,"
                     f" {m('routes_after_requests_VmRSS'):.1f} after requests;"
                     f" HWM {m('routes_after_requests_VmHWM'):.1f} (target <= 64);"
                     f" / hello {m('routes_after_requests_VmRSS') / m('hello_after_requests_VmRSS'):.2f}")
        lines.append(f"  start to serving: hello {m('hello_start_to_serving_ms'):.0f} ms,"
                     f" {results['memory']['routes']} routes {m('routes_start_to_serving_ms'):.0f} ms")
    return "\n".join(lines)


def connection_counts(text):
    """`--connections`: distinct positive counts, comma-separated."""
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}")
    if any(c < 1 for c in counts) or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"counts must be positive and distinct: {text!r}")
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kfaas", default=os.path.join(REPO, "target", "release", "kfaas"))
    ap.add_argument("--backend", default=os.path.join(
        BENCH_DIR, "backend", "target", "release", "kfaas-bench-backend"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    ap.add_argument("--connections", type=connection_counts,
                    default=[32, 128],
                    help="wrk connections of the proxy benchmark, comma-separated; each is measured"
                         " in rounds of its own (default 32,128)")
    ap.add_argument("--cold-starts", type=int, default=20)
    ap.add_argument("--routes", type=int, default=10000)
    ap.add_argument("--memory-requests", type=int, default=50)
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="before each run, wait for the 1-minute load average to drop below this")
    ap.add_argument("--max-wait", type=float, default=120,
                    help="...but no longer than this many seconds")
    ap.add_argument("--only", default="proxy,lambda,cold,memory")
    ap.add_argument("--variants", default="nolog,nolog-wt1,log",
                    help="kfaas configurations of the proxy benchmark: nolog, nolog-wt1,"
                         " nolog-wt2, log, log-wt1")
    ap.add_argument("--kfaas-base", action="append", default=[], metavar="[NAME=]PATH",
                    help="another kfaas binary, proxy-benchmarked beside --kfaas in the same rounds"
                         " (label kfaas@NAME, NAME defaults to base); may be repeated")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/<time>.json)")
    args = ap.parse_args()
    args.kfaas = os.path.abspath(args.kfaas)
    args.backend = os.path.abspath(args.backend)

    started = datetime.datetime.now(datetime.timezone.utc)
    results = {"date": started.isoformat(timespec="seconds"), "machine": machine(),
               "command": " ".join(sys.argv), "load_at_start": loadavg()}
    benches = {"proxy": bench_proxy, "lambda": bench_lambda, "cold": bench_cold,
               "memory": bench_memory}
    work = tempfile.mkdtemp(prefix="kfaas-bench-")
    try:
        for name in args.only.split(","):
            benches[name](args, work, results)
    finally:
        if args.keep:
            log(f"logs and configs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["load_at_end"] = loadavg()
    text = fmt_summary(results)
    out = args.out or os.path.join(BENCH_DIR, "results",
                                   started.strftime("%Y%m%dT%H%M%SZ") + ".json")
    write(out, json.dumps(results, indent=2))
    write(out[:-5] + ".txt" if out.endswith(".json") else out + ".txt",
          f"{results['date']}  {results['machine']}\n{results['command']}\n"
          f"load average {results['load_at_start']:.2f} at start, {results['load_at_end']:.2f} at end\n\n"
          + text + "\n")
    print(text)
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
