#!/usr/bin/python3
"""A real browser through mgate: headless Debian Chromium loads a page (tests/js/browser.html,
served by this test on 127.0.0.1) that uses MQTT.js's browser bundle over wss:// (and ws://) through
mgate to mosquitto: it connects, subscribes, publishes and receives its own message, and POSTs
what happened back to the test. The same page from another origin is refused by ALLOWED_ORIGINS,
and without the test's certificate exception Chromium refuses mgate's certificate; in both cases
the broker never sees the client.
"""
import base64
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

JS_DIR = os.path.join(h.REPO, "tests", "js")
PAGE = os.path.join(JS_DIR, "browser.html")
BUNDLE = os.path.join(JS_DIR, "node_modules", "mqtt", "dist", "mqtt.min.js")
CHROMIUM = "/usr/bin/chromium"
WS, WSS = "MGATE_MQTT_WS_WITHOUT_TLS_", "MGATE_MQTT_WS_WITH_TLS_"


def need_browser():
    for path in (CHROMIUM, BUNDLE):
        if not os.path.exists(path):
            print(f"{path} is needed: run tests/deps.sh", file=sys.stderr)
            sys.exit(1)


class PageServer:
    """The page and the bundle over HTTP on 127.0.0.1 (a thread of this test), and the results
    the pages POST back, by token. Reached as http://127.0.0.1:PORT or http://localhost:PORT:
    two origins for one server."""

    def __init__(self):
        self.results = {}
        self.requests = []
        self.cond = threading.Condition()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                server.requests.append((self.command, self.path, self.headers.get("Host")))

            def do_GET(self):  # noqa: N802 - http.server's name
                path = urllib.parse.urlsplit(self.path).path
                files = {"/page.html": (PAGE, "text/html"), "/mqtt.min.js": (BUNDLE, "text/javascript")}
                if path not in files:
                    self.send_error(404)
                    return
                with open(files[path][0], "rb") as f:
                    body = f.read()
                self.send_response(200)
                self.send_header("Content-Type", files[path][1])
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                token = urllib.parse.parse_qs(url.query).get("token", [""])[0]
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(204)
                self.end_headers()
                with server.cond:
                    server.results[token] = json.loads(body)
                    server.cond.notify_all()

        self.httpd = http.server.ThreadingHTTPServer((h.HOST, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, token, timeout):
        with self.cond:
            self.cond.wait_for(lambda: token in self.results, timeout)
            return self.results.get(token)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def spki_hash(cert):
    """base64(sha256(SubjectPublicKeyInfo)) of a certificate: what --ignore-certificate-errors-spki-list
    takes."""
    pub = h.openssl_out("x509", "-in", cert, "-noout", "-pubkey").stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.encode(), capture_output=True,
                         timeout=10).stdout
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-binary"], input=der, capture_output=True,
                            timeout=10).stdout
    return base64.b64encode(digest).decode()


def browser_pids(profile):
    """PIDs of processes that run with this profile directory (the browser and its helpers)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if profile.encode() in f.read():
                        pids.append(int(d))
            except OSError:
                pass
    return pids


_tokens = [0]


def browse(t, tmp, server, origin_host, runs, spki=None, what=""):
    """Chromium loads the page from http://ORIGIN_HOST:PORT with these runs; returns the page's
    report (None when it sent none in time). Chromium is stopped by its PID, and the test checks
    that none of its processes is left."""
    _tokens[0] += 1
    token = f"page{_tokens[0]}"
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    query = urllib.parse.urlencode({"token": token, "runs": json.dumps(runs)})
    url = f"http://{origin_host}:{server.port}/page.html?{query}"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--disable-default-apps", "--no-proxy-server",
            # names other than the loopback ones resolve to nothing: the page cannot reach anything else
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            f"--user-data-dir={profile}"]
    if spki:
        argv.append(f"--ignore-certificate-errors-spki-list={spki}")
    log = os.path.join(tmp, f"chromium-{token}.log")
    t0 = time.monotonic()
    with open(log, "wb") as logf:
        proc = h.spawn(argv + [url], stdout=logf, stderr=logf, stdin=subprocess.DEVNULL)
    try:
        report = server.wait(token, 40.0)
    finally:
        h.stop(proc, timeout=5.0)
        left = h.wait_until(lambda: not browser_pids(profile), 5.0)
        if not left:
            for pid in browser_pids(profile):  # helpers of the browser this test started
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
    t.check(report is not None, f"{what}: Chromium loaded the page and it reported ({time.monotonic() - t0:.1f} s)",
            h.LogFile(log).text()[-800:])
    t.check(left, f"{what}: Chromium and its helper processes are gone after SIGTERM to its PID")
    return report or {"results": []}


def gate(tmp, broker, prefix, pki, origin):
    port = h.free_port()
    env = {"HOST": h.HOST, "PORT": port, "TARGET_HOST": h.HOST, "TARGET_PORT": broker.port,
           "TARGET_PROTOCOL": "mqtt", "PATH_PREFIX": "/mqtt", "ALLOWED_ORIGINS": origin}
    if prefix == WSS:
        env.update(CERT_FILE=pki["server.crt"], KEY_FILE=pki["server.key"])
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, **{prefix + k: v for k, v in env.items()})
    return g, port


def main():
    h.need_binaries()
    need_browser()
    t = h.Checks("ws_browser")
    with tempfile.TemporaryDirectory() as tmp:
        pki = h.Pki(tmp)
        broker = h.start_mosquitto(tmp)
        server = PageServer()
        allowed = f"http://127.0.0.1:{server.port}"
        # One WebSocket listener per mgate (see test_ws_js.py).
        wss, wss_port = gate(tmp, broker, WSS, pki, allowed)
        ws, ws_port = gate(tmp, broker, WS, pki, allowed)
        spki = spki_hash(pki["server.crt"])
        watch = h.raw_client(broker.port, 4, "browser-watch", keepalive=0)
        t.eq(watch.subscribe(1, [("browser/#", 0)]), [0], "a subscriber straight on the broker is ready")

        def page_works():
            runs = [{"url": f"wss://localhost:{wss_port}/mqtt", "version": 4, "id": "browser-wss-4",
                     "topic": "browser/wss/4"},
                    {"url": f"wss://localhost:{wss_port}/mqtt", "version": 5, "id": "browser-wss-5",
                     "topic": "browser/wss/5"},
                    {"url": f"ws://localhost:{ws_port}/mqtt", "version": 4, "id": "browser-ws-4",
                     "topic": "browser/ws/4"}]
            mark, wmark = broker.log.mark(), wss.log.mark()
            report = browse(t, tmp, server, "127.0.0.1", runs, spki, "allowed origin")
            t.check("HeadlessChrome" in report.get("agent", ""), "the page ran in headless Chromium",
                    report.get("agent"))
            t.eq(report.get("origin"), allowed, f"the page's origin is {allowed}")
            got = {r["id"]: r for r in report["results"]}
            for run in runs:
                r = got.get(run["id"], {})
                what = f"browser, {run['url'].split(':')[0]}:// v{run['version']}"
                t.eq((r.get("connected"), r.get("suback"), r.get("end")), (True, [1], "received"),
                     f"{what}: connected, SUBACK grants QoS 1, its own message came back ({r.get('ms')} ms)")
                t.eq(r.get("received"), [run["topic"], f"from {run['id']} in the browser"],
                     f"{what}: the message is the one it published")
                level = {4: 2, 5: 5}[run["version"]]
                t.check(broker.log.search(rf"New client connected from \S+ as {run['id']} \(p{level},", mark),
                        f"{what}: mosquitto logged {run['id']} with protocol p{level}")
            seen = sorted(h.parse_publish(4, watch.read_packet(3.0)).topic for _ in runs)
            t.eq(seen, sorted(r["topic"] for r in runs), "the broker had the three messages")
            lines = [j for j in wss.json_since(wmark) if j.get("msg") == "connect"]
            t.eq(sorted((j.get("client_id"), j.get("listener")) for j in lines),
                 [("browser-wss-4", "mqtt_ws_with_tls"), ("browser-wss-5", "mqtt_ws_with_tls")],
                 "mgate's wss listener logged both browser sessions")
            t.eq(sum(1 for m, p, host in server.requests if p == "/mqtt.min.js"), 1,
                 "the page loaded the bundle from this test's server")

        def other_origin():
            bad = f"http://localhost:{server.port}"
            mark = broker.log.mark()
            runs = [{"url": f"wss://localhost:{wss_port}/mqtt", "version": 4, "id": "browser-other-origin",
                     "topic": "browser/other"}]
            report = browse(t, tmp, server, "localhost", runs, spki, "other origin")
            t.eq(report.get("origin"), bad, f"the page's origin is {bad}, not in ALLOWED_ORIGINS")
            r = (report["results"] or [{}])[0]
            t.eq((r.get("connected"), r.get("received")), (False, None),
                 f"a page from {bad}: mgate refuses the upgrade, the page never connects ({r.get('end')})")
            t.check(not broker.saw_client("browser-other-origin", mark), "the broker never sees that client")

        def untrusted():
            mark, wmark = broker.log.mark(), wss.log.mark()
            runs = [{"url": f"wss://localhost:{wss_port}/mqtt", "version": 4, "id": "browser-untrusted",
                     "topic": "browser/untrusted"}]
            report = browse(t, tmp, server, "127.0.0.1", runs, None, "no certificate exception")
            r = (report["results"] or [{}])[0]
            t.eq((r.get("connected"), r.get("received")), (False, None),
                 f"without the exception for the test CA's certificate Chromium refuses mgate's ({r.get('end')})")
            t.check(wss.log.wait(r'"msg":"TLS handshake failed"', 3.0, wmark),
                    "mgate logs the handshake Chromium broke off")
            t.check(not broker.saw_client("browser-untrusted", mark), "the broker never sees that client")

        t.case("a page from the allowed origin over wss:// and ws://", page_works)
        t.case("the same page from another origin", other_origin)
        t.case("mgate's certificate is really checked", untrusted)
        watch.close()
        server.close()
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
