#!/usr/bin/python3
"""Packaging stays true to the code, though no Docker engine or cluster runs here.

* Dockerfile: every shared library the built mgate needs is in a package its runtime stage
  installs, and none it does not (libwebsockets and libuv are gone); the build stage installs only packages that
  tests/deps.sh (the documented install path) installs.
* deploy/kubernetes and deploy/systemd: their MGATE_* settings pass `mgate --check-config`
  (certificate paths pointed at a test PKI), so a renamed key or a bad value fails here.
"""
import os
import re
import subprocess
import tempfile

import yaml

import harness as h

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def apt_lists(dockerfile):
    """The package lists of each `apt-get install` in the Dockerfile, in order."""
    text = open(dockerfile).read().replace("\\\n", " ")
    return [set(re.findall(r"[a-z0-9][a-z0-9.+-]+", m.split("--no-install-recommends", 1)[1].split("&&")[0]))
            for m in re.findall(r"apt-get install[^\n]*", text)]


def dockerfile(t):
    build, runtime = apt_lists(os.path.join(ROOT, "Dockerfile"))
    deps = open(os.path.join(ROOT, "tests", "deps.sh")).read()
    listed = set(re.findall(r"[a-z0-9][a-z0-9.+-]+", deps.split("PACKAGES=(", 1)[1].split(")", 1)[0]))
    t.eq(sorted(build - listed - {"ca-certificates"}), [], "Dockerfile build stage: only packages tests/deps.sh installs")
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]",
                        subprocess.run(["readelf", "-d", h.MGATE_BIN], capture_output=True, text=True).stdout)
    t.check(len(needed) >= 5, f"setup: readelf lists mgate's libraries ({needed})")
    # what apt brings along with the runtime packages counts as installed too
    deps = subprocess.run(["dpkg-query", "-W", "-f", "${Depends}\n", *runtime], capture_output=True, text=True).stdout
    pulled = set(re.findall(r"(?:^|, |\| )([a-z0-9][a-z0-9.+-]+)", deps))
    for lib in needed:
        if re.match(r"lib(asan|ubsan)\.", lib):
            continue  # an MGATE_SANITIZE build's runtimes, never in a release image
        owner = subprocess.run(["dpkg", "-S", lib], capture_output=True, text=True).stdout
        pkgs = {line.split(":", 1)[0] for line in owner.splitlines() if "-dev" not in line.split(":", 1)[0]}
        t.check(pkgs & (runtime | pulled | {"libc6"}), f"Dockerfile runtime stage installs {lib} ({sorted(pkgs)})")
    gone = sorted(p for p in build | runtime | set(listed) if re.match(r"libwebsockets|libuv", p))
    t.eq(gone, [], "Dockerfile and tests/deps.sh: no libwebsockets or libuv packages (docs/WEBSOCKET.md says why)")
    t.eq([lib for lib in needed if re.match(r"libwebsockets|libuv", lib)], [],
         "mgate links neither libwebsockets nor libuv")


def check_config(t, what, env, pki, broker_port):
    paths = {"server.crt": pki["server.crt"], "server.key": pki["server.key"], "ca.crt": pki["ca.crt"],
             "fullchain.pem": pki["server.crt"], "privkey.pem": pki["server.key"]}
    env = {k: str(v) for k, v in env.items() if k.startswith("MGATE_")}
    for k, v in env.items():
        if v.startswith("/etc/mgate/tls/"):
            env[k] = paths[os.path.basename(v)]
        elif k.endswith("_TARGET_PORT"):
            env[k] = str(broker_port)
    t.check(len(env) >= 8, f"{what}: has MGATE_* settings ({len(env)})")
    r = subprocess.run([h.MGATE_BIN, "--check-config"], env={**h.clean_env(), **env}, capture_output=True,
                       text=True, timeout=10)
    t.check(r.returncode == 0 and "configuration OK" in r.stdout and "unknown variables" not in r.stderr,
            f"{what}: mgate --check-config accepts them", (r.stdout + r.stderr)[-300:])


def deployments(t, tmp):
    pki = h.Pki(tmp)
    docs = list(yaml.safe_load_all(open(os.path.join(ROOT, "deploy", "kubernetes", "mgate-sidecar.yaml"))))
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "mgate")
    check_config(t, "deploy/kubernetes ConfigMap mgate", cm["data"], pki, h.free_port())
    dep = next(d for d in docs if d["kind"] == "Deployment")
    mg = next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "mgate")
    t.eq((mg["readinessProbe"]["httpGet"]["path"], mg["livenessProbe"]["httpGet"]["path"]), ("/readyz", "/healthz"),
         "deploy/kubernetes: probes on /readyz and /healthz")
    t.eq(str(cm["data"]["MGATE_ADMIN_PORT"]), str(next(p["containerPort"] for p in mg["ports"] if p["name"] == "admin")),
         "deploy/kubernetes: the admin port is the one the probes use")
    env = dict(line.split("=", 1) for line in open(os.path.join(ROOT, "deploy", "systemd", "mgate.env"))
               if "=" in line and not line.startswith("#"))
    check_config(t, "deploy/systemd/mgate.env", {k: v.strip() for k, v in env.items()}, pki, h.free_port())


def main():
    h.need_binaries()
    t = h.Checks("packaging")
    with tempfile.TemporaryDirectory() as tmp:
        t.case("Dockerfile", dockerfile, t)
        t.case("deployments", deployments, t, tmp)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
