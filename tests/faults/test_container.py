#!/usr/bin/python3
"""faults.container: the Dockerfile built with podman and the image run against a real mosquitto.

No Docker engine runs on the machines mgate is developed and tested on, but Debian's podman does,
as root, with runc (crun fails on their hybrid cgroups) and the two --ulimit flags below; no image
registry is reachable, so the Debian 12 base image is made with debootstrap from the Debian
mirror apt already uses and imported (docs/TESTING.md, "The container image").

Steps, each skipped (exit 77, with the reason) when the machine cannot do it, never failed:
  * podman, runc and debootstrap are installed with apt-get when missing (root, apt-get);
  * debian:12 and debian:12-slim are made with debootstrap and `podman import` only when podman
    has no such image yet: they are the cache the next run starts from, and stay;
  * both of these only with MGATE_CONTAINER_SETUP=1, the default; tests/run.sh (CI) sets 0, so
    that a machine without podman or the base image skips instead of spending about five
    minutes on them (tests/long.sh, or this script run alone, sets them up);
  * a trivial container must run (else podman cannot run containers here).
Then, checked (a failure is a failure):
  * the build context (.dockerignore) holds only what the Dockerfile copies, no build directory;
  * `podman build` of the Dockerfile succeeds; its image runs as uid 10001 and holds no compiler,
    no -dev package; its size;
  * the image, run with --network=host against mosquitto on loopback ports: a 3.1.1 and a 5.0
    publish/subscribe round trip through it, /readyz 200, the process is uid 10001 (podman exec,
    and /proc of the container's main process on the host);
  * SIGTERM (podman kill --signal TERM): the 5.0 client gets DISCONNECT 0x8B at once, /readyz
    turns 503, the 3.1.1 client is still served during MGATE_SHUTDOWN_GRACE and closed at its
    end, and the container exits 0 by then.
The image (tag localhost/mgate-faults-container:latest) is kept as the build's layer cache, the
image of an earlier run is removed when a new one replaces it; the test's containers are removed.
MGATE_LONG=1 builds without the layer cache (what a change of the Dockerfile's packages costs).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402

SKIP = 77
ROOT = os.environ.get("MGATE_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LONG = os.environ.get("MGATE_LONG") == "1"
PACKAGES = ["podman", "runc", "debootstrap"]
# Install the packages and make the base image when missing (see the docstring).
SETUP = os.environ.get("MGATE_CONTAINER_SETUP", "1") != "0"
PODMAN = ["podman", "--runtime", "runc"]
# crun cannot set rlimits here (no CAP_SYS_RESOURCE) and runc needs them inside the hard limit
# of the machine (about 20000 open files): podman's defaults are above it.
ULIMITS = ["--ulimit", "nofile=1024:20000", "--ulimit", "nproc=4096:4096"]
BASE, SLIM = "docker.io/library/debian:12", "docker.io/library/debian:12-slim"
IMAGE = "localhost/mgate-faults-container:latest"
LABEL = "mgate.test=faults.container"
UID = "10001"  # the Dockerfile's USER
GRACE = 6  # MGATE_SHUTDOWN_GRACE in the container, seconds
RUN_TAG = f"{os.getpid()}-{int(time.time())}"

_containers = []  # names of the containers this run created, removed at the end
_images = []  # images this run made that are no cache (the context probe)


class Skip(Exception):
    """The machine cannot run this test; the message says why."""


def sh(argv, timeout=120, log=None, **kw):
    """Run a command; returns the CompletedProcess (text). With log, its output goes to that file."""
    if log:
        with open(log, "ab") as f:
            r = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, **kw)
        r.stdout = r.stderr = ""
        return r
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)


def tail(path, n=1500):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


def installed(pkg):
    r = sh(["dpkg-query", "-W", "-f", "${Status}", pkg], timeout=30)
    return r.returncode == 0 and "install ok installed" in r.stdout


# ---------------------------------------------------------------------------
# what the machine must have: skip (77) when it cannot


def need_tools(t, tmp, timings):
    if os.geteuid() != 0:
        raise Skip(f"podman runs containers here only as root (rootless needs subuids and a user "
                   f"namespace set-up this test does not make); running as uid {os.geteuid()}")
    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if not shutil.which(tool):
            raise Skip(f"{tool} is not installed (tests/deps.sh installs it)")
    if not shutil.which("dpkg-query"):
        raise Skip("not a Debian system (no dpkg-query): podman, runc and debootstrap come from Debian here")
    missing = [p for p in PACKAGES if not installed(p)]
    if missing and not SETUP:
        raise Skip(f"{' '.join(missing)} not installed, and MGATE_CONTAINER_SETUP=0 (tests/run.sh) does not "
                   f"install them: run tests/faults/test_container.py alone, or tests/long.sh")
    if missing:
        if not shutil.which("apt-get"):
            raise Skip(f"{' '.join(missing)} missing and no apt-get to install them")
        log = os.path.join(tmp, "apt.log")
        t0 = time.monotonic()
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        lock = ["-o", "DPkg::Lock::Timeout=300"]  # another apt-get may be running (tests/deps.sh)
        r = sh(["apt-get", *lock, "update", "-qq"], timeout=600, log=log, env=env)
        if r.returncode == 0:
            r = sh(["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *missing],
                   timeout=900, log=log, env=env)
        if r.returncode != 0:
            raise Skip(f"apt-get could not install {' '.join(missing)}: {tail(log, 600)}")
        timings["install"] = time.monotonic() - t0
        print(f"  installed {' '.join(missing)} in {timings['install']:.0f} s", flush=True)
    r = sh([*PODMAN, "info", "--format", "{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}"], timeout=120)
    if r.returncode != 0:
        raise Skip(f"podman info fails: {r.stderr.strip()[-600:]}")
    print(f"  podman: runtime and storage driver: {r.stdout.strip()}", flush=True)


def debian_mirror():
    """The URI of the Debian archive apt uses on this machine: apt's own index targets (both
    sources formats, parsed by apt) of origin Debian, label Debian (not Debian-Security), component
    main. Read at run time so that no mirror's name is written in the tree; None when apt knows
    none (its lists were never downloaded: apt-get update)."""
    fmt = "$(ORIGIN)|$(LABEL)|$(COMPONENT)|$(IDENTIFIER)|$(REPO_URI)"
    r = sh(["apt-get", "indextargets", "--format", fmt], timeout=60)
    for line in r.stdout.splitlines():
        origin, label, component, ident, uri = (line.split("|") + [""] * 5)[:5]
        if (origin, label, component, ident) == ("Debian", "Debian", "main", "Packages") and uri:
            return uri
    return None


def image_exists(name):
    return sh([*PODMAN, "image", "exists", name], timeout=60).returncode == 0


def image_label(name, key):
    r = sh([*PODMAN, "image", "inspect", "--format", "{{json .Labels}}", name], timeout=60)
    try:
        return (json.loads(r.stdout) or {}).get(key) if r.returncode == 0 else None
    except ValueError:
        return None


# What makes the debootstrapped tree a slim container base, as Debian's published images are: apt
# keeps neither its binary caches nor the packages it downloaded (else they stay in the layer of
# every `apt-get install`), and dpkg installs no documentation, manual pages or translations.
SLIM_FILES = {
    "etc/apt/apt.conf.d/90mgate-test-slim":
        "// tests/faults/test_container.py: a container base keeps no apt caches in its layers\n"
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\nAPT::Keep-Downloaded-Packages "false";\n',
    "etc/dpkg/dpkg.cfg.d/90mgate-test-slim":
        "# tests/faults/test_container.py: no documentation in a slim image (copyright files stay)\n"
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n",
}
BASE_LABEL, BASE_VERSION = "mgate.test.base", "slim-1"  # a new version remakes a base made by this test


def slim_down(root):
    """Give the tree SLIM_FILES and remove what they keep out of later installs."""
    for rel, text in SLIM_FILES.items():
        with open(os.path.join(root, rel), "w") as f:
            f.write(text)
    gone = ["var/lib/apt/lists/*", "var/cache/apt/*.bin", "var/cache/apt/archives/*.deb",
            "usr/share/man/*", "usr/share/info/*"]
    paths = [p for g in gone for p in glob.glob(os.path.join(root, g))]
    paths += [p for p in glob.glob(os.path.join(root, "usr/share/locale/*")) if not p.endswith("/locale.alias")]
    for doc in glob.glob(os.path.join(root, "usr/share/doc/*")):
        paths += [os.path.join(doc, n) for n in os.listdir(doc) if n != "copyright"] if os.path.isdir(doc) else [doc]
    for p in paths:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)


def base_image(t, tmp, timings):
    """debian:12 and debian:12-slim in podman's store: made once with debootstrap, then reused.
    An image of those names that this test did not make (no BASE_LABEL) is used as it is."""
    if image_exists(BASE) and image_exists(SLIM):
        made = image_label(SLIM, BASE_LABEL)
        if made in (None, BASE_VERSION):
            print(f"  base image: debian:12 and debian:12-slim are in podman's store (cached, "
                  f"{'made by this test' if made else 'not made by this test'})", flush=True)
            return
        print(f"  base image: made by an older version of this test ({made}): made again", flush=True)
    if not SETUP:
        raise Skip(f"no {SLIM} base image made by this test in podman's store, and MGATE_CONTAINER_SETUP=0 "
                   f"(tests/run.sh) does not debootstrap one: run tests/faults/test_container.py alone, or tests/long.sh")
    mirror = debian_mirror()
    if not mirror:
        sh(["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"], timeout=600)
        mirror = debian_mirror()
    if not mirror:
        raise Skip("apt knows no Debian archive (origin Debian, component main) to debootstrap Debian 12 from")
    root = tempfile.mkdtemp(prefix="mgate-debootstrap-", dir="/var/tmp")
    log = os.path.join(tmp, "debootstrap.log")
    try:
        t0 = time.monotonic()
        r = sh(["debootstrap", "--variant=minbase", "bookworm", root, mirror], timeout=1200, log=log)
        if r.returncode != 0:
            raise Skip(f"debootstrap could not make a Debian 12 root file system: {tail(log, 800)}")
        timings["debootstrap"] = time.monotonic() - t0
        t0 = time.monotonic()
        slim_down(root)
        tar = subprocess.Popen(["tar", "-C", root, "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
        r = subprocess.run([*PODMAN, "import",
                            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "--change", "CMD /bin/bash", "--change", f"LABEL {BASE_LABEL}={BASE_VERSION}",
                            "-", BASE],
                           stdin=tar.stdout, capture_output=True, text=True, timeout=600)
        tar.stdout.close()
        tar.wait(60)
        t.check(r.returncode == 0 and tar.returncode == 0, "base image: the debootstrapped tree is imported as "
                "debian:12", r.stderr[-600:])
        r = sh([*PODMAN, "tag", BASE, SLIM])
        t.check(r.returncode == 0, "base image: tagged debian:12-slim too", r.stderr)
        timings["import"] = time.monotonic() - t0
        print(f"  base image: debootstrap {timings['debootstrap']:.0f} s, import {timings['import']:.0f} s",
              flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not (image_exists(BASE) and image_exists(SLIM)):
        raise RuntimeError("the base images are not in podman's store after the import")


def can_run(tmp):
    """A trivial container from the base image: when this fails, podman cannot run containers here."""
    name = f"mgate-faults-probe-{RUN_TAG}"
    _containers.append(name)
    r = sh([*PODMAN, "run", "--name", name, "--network=host", *ULIMITS, SLIM, "/bin/true"], timeout=300)
    if r.returncode != 0:
        raise Skip(f"podman cannot run a container here: {r.stderr.strip()[-800:]}")


# ---------------------------------------------------------------------------
# the build


def context(t, tmp):
    """What a build of the source tree sees, through .dockerignore: only what the Dockerfile copies."""
    ignore = os.path.join(ROOT, ".dockerignore")
    if not t.check(os.path.exists(ignore), ".dockerignore exists in the source tree"):
        return
    probe = os.path.join(tmp, "probe")
    os.makedirs(probe)
    with open(os.path.join(probe, "Dockerfile"), "w") as f:
        f.write(f"FROM {SLIM}\nCOPY . /ctx\n")
    tag = f"localhost/mgate-faults-context:{RUN_TAG}"
    _images.append(tag)
    r = sh([*PODMAN, "build", "--layers=false", "--network=host", *ULIMITS, "-q", "-t", tag,
            "-f", os.path.join(probe, "Dockerfile"), ROOT], timeout=600)
    if not t.check(r.returncode == 0, "the build context can be copied into an image", r.stderr[-800:]):
        return
    name = f"mgate-faults-context-{RUN_TAG}"
    _containers.append(name)
    r = sh([*PODMAN, "run", "--name", name, "--network=host", *ULIMITS, tag, "/bin/sh", "-c",
            "ls -A /ctx; echo ==; cd /ctx && find . \\( -name 'build*' -o -name .git -o -name node_modules "
            "-o -name '*.o' -o -path ./bench/out \\) -print; echo ==; du -sk /ctx"], timeout=300)
    top, found, size = (r.stdout.split("==\n") + ["", "", ""])[:3]
    want = ["CMakeLists.txt", "bench", "examples", "include", "src"]
    t.eq(sorted(top.split()), want, f"the build context holds only what the Dockerfile copies ({' '.join(want)})")
    t.eq(found.split(), [], "no build directory, .git, node_modules or object file in the build context")
    print(f"  build context: {size.split()[0] if size.split() else '?'} KiB", flush=True)


def image_id(name):
    r = sh([*PODMAN, "image", "inspect", "--format", "{{.Id}}", name], timeout=60)
    return r.stdout.strip() if r.returncode == 0 else None


def build(t, tmp, timings):
    log = os.path.join(tmp, "build.log")
    t0 = time.monotonic()
    r = sh([*PODMAN, "build", "--network=host", *ULIMITS, "--layers", "--force-rm", "--label", LABEL,
            *(["--no-cache"] if LONG else []), "-t", IMAGE, "-f", os.path.join(ROOT, "Dockerfile"), ROOT],
           timeout=1500, log=log)
    timings["build"] = time.monotonic() - t0
    text = tail(log, 4000)
    if r.returncode != 0 and re.search(r"Temporary failure resolving|Failed to fetch|Could not connect", text):
        raise Skip(f"the build's apt-get cannot reach the Debian mirror: {text[-800:]}")
    cached = len(re.findall(r"--> Using cache", open(log, errors="replace").read()))
    print(f"  build: {timings['build']:.0f} s ({cached} steps from the layer cache)", flush=True)
    if not t.check(r.returncode == 0, f"podman build of the Dockerfile succeeds ({timings['build']:.0f} s)",
                   text[-1500:]):
        return False
    prune(open(log, errors="replace").read())
    return True


def prune(build_log):
    """Remove the images (every layer of both stages carries LABEL) of earlier builds that this
    build did not use: the layer cache stays one build's worth, however often the source changed."""
    used = {m[:12] for m in re.findall(r"^--> (?:Using cache )?([0-9a-f]{11,64})$", build_log, re.M)}
    used.add((image_id(IMAGE) or "")[:12])
    r = sh([*PODMAN, "images", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL}"], timeout=120)
    stale = {i.split(":")[-1] for i in r.stdout.split()} - {""}
    stale = {i for i in stale if not any(i.startswith(u) for u in used if u)}
    removed = 0
    for _ in range(len(stale)):  # a parent goes once its children are gone
        left = set()
        for i in stale:
            if sh([*PODMAN, "rmi", i], timeout=120).returncode == 0:
                removed += 1
            elif image_exists(i):
                left.add(i)
        if not left or left == stale:
            break
        stale = left
    if removed:
        print(f"  layer cache: {removed} images of earlier builds removed", flush=True)


def image_checks(t):
    r = sh([*PODMAN, "image", "inspect", IMAGE], timeout=60)
    info = json.loads(r.stdout)[0] if r.returncode == 0 else {}
    cfg = info.get("Config", {})
    t.eq(cfg.get("User"), UID, f"the image's user is {UID} (not root)")
    t.eq(cfg.get("Entrypoint"), ["/usr/local/bin/mgate"], "the entry point is mgate itself (it gets SIGTERM)")
    size = info.get("Size", 0)
    base = json.loads(sh([*PODMAN, "image", "inspect", SLIM], timeout=60).stdout or "[{}]")[0].get("Size", 0)
    added = size - base
    print(f"  image size: {size / 1e6:.1f} MB, of which {added / 1e6:.1f} MB on top of debian:12-slim "
          f"({base / 1e6:.1f} MB)", flush=True)
    # mgate (~1 MB stripped) and its run-time libraries with their dependencies (libcurl's are
    # most of it): about 25 MB; a build stage leaking into the runtime image would add hundreds.
    t.check(0 < added < 60e6, f"the runtime stage adds less than 60 MB to the base ({added / 1e6:.1f} MB)")
    name = f"mgate-faults-nocc-{RUN_TAG}"
    _containers.append(name)
    script = ("for c in cc gcc c++ g++ cpp clang as ld make cmake pkg-config; do command -v $c; done; "
              "dpkg-query -W -f '${Package}\\n' | grep -E -- '-dev$|^(gcc|g\\+\\+|cpp|clang)(-[0-9]+)?$|^binutils|"
              "^(make|cmake|build-essential)$' ; true")
    r = sh([*PODMAN, "run", "--name", name, "--network=host", *ULIMITS, "--entrypoint", "/bin/sh", IMAGE,
            "-c", script], timeout=300)
    t.check(r.returncode == 0, "a shell runs in the image", r.stderr[-500:])
    t.eq(r.stdout.split(), [], "the runtime image has no compiler, linker, build tool or -dev package")
    name = f"mgate-faults-version-{RUN_TAG}"
    _containers.append(name)
    r = sh([*PODMAN, "run", "--name", name, "--network=host", *ULIMITS, IMAGE, "--version"], timeout=300)
    t.check(r.returncode == 0 and "mgate" in r.stdout, f"mgate --version runs in the image ({r.stdout.strip()})",
            r.stderr[-500:])


# ---------------------------------------------------------------------------
# the image, run


def http_get(port, path, timeout=3.0):
    """(status, body) of GET http://127.0.0.1:port/path; (None, error) when there is no answer."""
    try:
        with urllib.request.urlopen(f"http://{h.HOST}:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


class Container:
    """The image running with --network=host: mgate's MQTT listener and admin listener on free
    loopback ports, its broker the test's mosquitto."""

    def __init__(self, broker_port):
        self.port, self.admin = h.free_ports(2)
        self.name = f"mgate-faults-container-{RUN_TAG}"
        _containers.append(self.name)
        env = {"MGATE_MQTT_WITHOUT_TLS_HOST": h.HOST, "MGATE_MQTT_WITHOUT_TLS_PORT": self.port,
               "MGATE_MQTT_WITHOUT_TLS_TARGET_HOST": h.HOST, "MGATE_MQTT_WITHOUT_TLS_TARGET_PORT": broker_port,
               "MGATE_ADMIN_HOST": h.HOST, "MGATE_ADMIN_PORT": self.admin,
               "MGATE_SHUTDOWN_GRACE": f"{GRACE}s", "MGATE_LOG_LEVEL": "info"}
        args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        t0 = time.monotonic()
        r = sh([*PODMAN, "run", "-d", "--name", self.name, "--network=host", *ULIMITS, *args, IMAGE], timeout=300)
        if r.returncode != 0:
            raise RuntimeError(f"podman run failed: {r.stderr.strip()[-800:]}")
        self.pid = int(sh([*PODMAN, "inspect", "--format", "{{.State.Pid}}", self.name]).stdout.strip() or 0)
        h.wait_until(lambda: h.port_open(self.port) or not self.alive(), 60, 0.1)
        self.started = time.monotonic() - t0
        if not h.port_open(self.port):
            raise RuntimeError(f"mgate in the container does not listen on {self.port}: {self.logs()[-800:]}")

    def alive(self):
        return self.pid > 0 and os.path.exists(f"/proc/{self.pid}")

    def logs(self):
        r = sh([*PODMAN, "logs", self.name], timeout=60)
        return r.stdout + r.stderr

    def exit_code(self):
        r = sh([*PODMAN, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name], timeout=60)
        status, _, code = r.stdout.strip().partition(" ")
        return int(code) if status == "exited" and code.lstrip("-").isdigit() else None


def proc_ids(pid):
    """The Uid and Gid lines of /proc/PID/status (real, effective, saved, filesystem), and CapEff."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "CapEff", "Name"):
                out[key] = value.split()
    return out


def running(t, c, broker):
    print(f"  container {c.name}: main process {c.pid}, listening after {c.started:.1f} s", flush=True)
    ids = proc_ids(c.pid)
    t.eq(ids.get("Name"), ["mgate"], "the container's main process is mgate")
    t.eq(ids.get("Uid"), [UID] * 4, f"it runs as uid {UID} on the host (/proc/{c.pid}/status: real, effective, "
         "saved, fs)")
    t.check(int(ids.get("CapEff", ["1"])[0], 16) == 0, f"with no effective capability (CapEff {ids.get('CapEff')})")
    r = sh([*PODMAN, "exec", c.name, "id"], timeout=120)
    t.check(r.returncode == 0 and re.match(rf"uid={UID}\b", r.stdout), f"podman exec id: {r.stdout.strip()}",
            r.stderr[-300:])
    status = h.wait_until(lambda: http_get(c.admin, "/readyz")[0] == 200, 30, 0.2)
    code, body = http_get(c.admin, "/readyz")
    t.check(status and code == 200, f"/readyz answers 200 (ready): {body.strip()[:120]!r}", f"{code} {body}")
    t.eq(http_get(c.admin, "/healthz")[0], 200, "/healthz answers 200")
    t.eq(h.mosq_pub_sub(c.port, broker, [], "container round trip v311"), "",
         "MQTT 3.1.1 publish/subscribe round trip through the container (mosquitto_pub/sub, QoS 1)")
    t.eq(h.mosq_pub_sub(c.port, broker, ["-V", "mqttv5"], "container round trip v5"), "",
         "MQTT 5.0 publish/subscribe round trip through the container (mosquitto_pub/sub, QoS 1)")


def drain(t, c):
    c5 = h.raw_client(c.port, 5, f"drain5-{RUN_TAG}")
    c4 = h.raw_client(c.port, 4, f"drain4-{RUN_TAG}")
    t.eq(c4.subscribe(1, [("drain/v4", 1)]), [1], "the 3.1.1 client subscribes before the drain")
    t0 = time.monotonic()
    r = sh([*PODMAN, "kill", "--signal", "TERM", c.name], timeout=60)
    t.check(r.returncode == 0, "podman kill --signal TERM", r.stderr[-300:])
    try:
        p = c5.read_packet(5.0)
    except (h.Closed, TimeoutError) as e:
        p = e
    took5 = time.monotonic() - t0
    t.check(isinstance(p, h.Packet) and p.type == h.DISCONNECT and p.body[:1] == b"\x8b",
            f"SIGTERM: the 5.0 client gets DISCONNECT 0x8B (server shutting down) at once ({took5:.2f} s)", p)
    t.check(c5.expect_closed(3.0), "SIGTERM: then its connection is closed")
    code, body = http_get(c.admin, "/readyz")
    t.eq(code, 503, f"SIGTERM: /readyz answers 503 while draining ({body.strip()[:80]!r})")
    t.eq(http_get(c.admin, "/healthz")[0], 200, "SIGTERM: /healthz still answers 200 while draining")
    # the pair of an older client keeps going: a message to itself makes the whole round trip
    try:
        rc = c4.publish_wait("drain/v4", b"during the grace period", 1, 7, timeout=3.0)
        m = c4.recv_publish(3.0)
        served = rc == 0 and m.payload == b"during the grace period"
    except (h.Closed, TimeoutError, AssertionError) as e:
        served = f"{type(e).__name__}: {e}"
    t.check(served is True, f"SIGTERM: during the grace period the 3.1.1 client is still served "
            f"({time.monotonic() - t0:.2f} s after the signal)", served)
    closed4 = {}

    def watch4():  # timed in its own thread, so that the checks below do not count as mgate's delay
        closed4["ok"] = c4.expect_closed(GRACE + 10.0)
        closed4["at"] = time.monotonic()
    watcher = threading.Thread(target=watch4)
    watcher.start()
    exited = h.wait_until(lambda: not c.alive(), GRACE + 15.0, 0.05)
    took = time.monotonic() - t0
    watcher.join()
    took4 = closed4["at"] - t0
    t.check(closed4["ok"] and GRACE - 0.5 <= took4 <= GRACE + 3.0,
            f"SIGTERM: the 3.1.1 client is closed at the end of MGATE_SHUTDOWN_GRACE={GRACE}s ({took4:.2f} s)")
    t.check(exited and took <= GRACE + 3.0, f"SIGTERM: the container's process exits within the grace period "
            f"(+3 s for podman; {took:.2f} s)")
    h.wait_until(lambda: c.exit_code() is not None, 30, 0.2)  # podman records the exit a moment later
    t.eq(c.exit_code(), 0, "SIGTERM: the container exits 0")
    logs = c.logs()
    t.check(f"draining, grace period {GRACE * 1000} ms" in logs and '"msg":"mgate stopped"' in logs,
            "the container's log (podman logs) has mgate's lines: draining, then stopped", logs[-800:])
    for x in (c5, c4):
        x.close()


def cleanup_earlier():
    """What a run killed before its end (ctest's timeout) left: its containers, its context probe."""
    r = sh([*PODMAN, "ps", "-a", "-q", "--filter", "name=^mgate-faults-"], timeout=120)
    for cid in r.stdout.split():
        sh([*PODMAN, "rm", "-f", "--ignore", cid], timeout=120)
    # by name, never by ID: an ID removes every other name of the image too
    r = sh([*PODMAN, "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
            "reference=localhost/mgate-faults-context"], timeout=120)
    for ref in set(r.stdout.split()):  # the filter lists every name of a matching image
        if ref.startswith("localhost/mgate-faults-context:"):
            sh([*PODMAN, "rmi", "--ignore", ref], timeout=120)


def cleanup():
    for name in _containers:
        sh([*PODMAN, "rm", "-f", "--ignore", name], timeout=120)
    for image in _images:
        sh([*PODMAN, "rmi", "--ignore", image], timeout=120)


def main():
    t = h.Checks("container")
    timings = {}
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            need_tools(t, tmp, timings)
            cleanup_earlier()
            base_image(t, tmp, timings)
            can_run(tmp)
        except Skip as e:
            cleanup()
            print(f"SKIPPED: {e}", flush=True)
            return SKIP
        try:
            t0 = time.monotonic()
            t.case("build context", context, t, tmp)
            timings["context"] = time.monotonic() - t0
            t.section("podman build")
            if build(t, tmp, timings):
                t0 = time.monotonic()
                t.case("the image", image_checks, t)
                timings["image checks"] = time.monotonic() - t0
                t0 = time.monotonic()
                broker = h.Broker(tmp)
                c = None
                try:
                    c = Container(broker.port)
                except RuntimeError as e:
                    t.check(False, "the image runs and listens", str(e))
                if c:
                    t.case("running against mosquitto", running, t, c, broker)
                    t.case("SIGTERM drain", drain, t, c)
                broker.stop()
                timings["run and drain"] = time.monotonic() - t0
        except Skip as e:
            cleanup()
            print(f"SKIPPED: {e}", flush=True)
            return SKIP
        finally:
            cleanup()
    timings["total"] = time.monotonic() - t_start
    print("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()), flush=True)
    print(f"kept as caches: {BASE}, {SLIM} (the debootstrapped base) and {IMAGE} (the build's layers); "
          f"`podman rmi {IMAGE} {SLIM} {BASE}` removes them", flush=True)
    return t.done()


if __name__ == "__main__":
    h.run_main(main)
