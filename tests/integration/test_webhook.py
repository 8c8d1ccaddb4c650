#!/usr/bin/python3
"""The `http` handler (an auth webhook) against a real local HTTP service.

The service (a threaded http.server in this process, on 127.0.0.1) answers by what it is asked:
username or topic "allow..." / "deny..." / "ignore..." get {"result": ...}; "slow..." is allowed
after 200 ms; "hang..." answers after 5 s (past MGATE_WEBHOOK_TIMEOUT); "s403..." / "s500..." get
that status; "garbage..." a body that is not JSON; "empty..." an empty 200. It records every
request and how many "slow..." CONNECTs were in flight at once.

* CONNECT: allow 0, deny 5/0x87, ignore with nobody after it 0, 403 refused, 500 / garbage /
  timeout / service down: MGATE_WEBHOOK_ON_ERROR (deny: CONNACK 3/0x88; allow: 0).
* The JSON the service gets: action, client id, username, password, peer, protocol, listener,
  topic, QoS, retain.
* PUBLISH and SUBSCRIBE verdicts (PUBACK 0x87, SUBACK per filter), a refused message never
  arrives.
* 100 clients whose webhook answer takes 200 ms connect at once: all in well under a second (the
  requests run concurrently on the loop); MGATE_WEBHOOK_CONCURRENCY=2 keeps at most 2 in flight.
* The cache: a second identical CONNECT within MGATE_WEBHOOK_CACHE_TTL asks nobody; after it, the
  service again; errors are not cached.
* The chain http,acl: the webhook's "ignore" leaves the verdict to acl.
* Start-up errors name the variable.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.dont_write_bytecode = True
import harness as h  # noqa: E402


class Service:
    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    req = json.loads(body)
                except ValueError:
                    req = {"unparsable": body.decode(errors="replace")}
                slow = str(req.get("username", "")).startswith("slow")  # only these are counted in flight
                with svc.lock:
                    svc.requests.append(req)
                    svc.inflight += slow
                    svc.max_inflight = max(svc.max_inflight, svc.inflight)
                try:
                    status, answer, *extra = svc.decide(req)  # extra: headers (test_webhook_modifiers)
                    data = answer.encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (extra[0] if extra else {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass
                finally:
                    with svc.lock:
                        svc.inflight -= slow

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # listen backlog: 100 connections arrive at once (the default is 5)

        self.server = Server((h.HOST, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{h.HOST}:{self.port}/auth"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def decide(req):
        if req.get("action") == "connect":
            key = req.get("username") or req.get("client_id") or ""
        else:
            key = (req.get("topic") or "").rsplit("/", 1)[-1]
        for word in ("allow", "deny", "ignore"):
            if key.startswith(word):
                return 200, json.dumps({"result": word, "note": {"nested": [1, 2, {"x": "y"}]}})
        if key.startswith("slow"):
            time.sleep(0.2)
            return 200, '{"result": "allow"}'
        if key.startswith("hang"):
            time.sleep(5)
            return 200, '{"result": "allow"}'
        if key.startswith("s403"):
            return 403, '{"error": "forbidden"}'
        if key.startswith("s500"):
            return 500, "oops"
        if key.startswith("garbage"):
            return 200, "this is not json"
        if key.startswith("badresult"):
            return 200, '{"result": "maybe"}'
        if key.startswith("empty"):
            return 200, ""
        return 200, '{"result": "allow"}'

    def count(self, pred):
        with self.lock:
            return sum(1 for r in self.requests if pred(r))

    def last(self, pred):
        with self.lock:
            for r in reversed(self.requests):
                if pred(r):
                    return r
        return None

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def connack(port, version, cid, user=None, password=None, timeout=5.0):
    c = h.RawClient(port)
    rc = c.connect(version, cid, username=user, password=password, timeout=timeout)
    c.close()
    return rc


def gate(tmp, broker, svc_url, **env):
    env.setdefault("MGATE_HANDLER", "http")
    env.setdefault("MGATE_WEBHOOK_URL", svc_url)
    env.setdefault("MGATE_WEBHOOK_TIMEOUT", "500ms")
    return h.Mgate(tmp, broker.port, **env)


def connect_verdicts(t, g, svc):
    for version, no, down in ((4, 5, 3), (5, 0x87, 0x88)):
        cases = [("allow-a", 0, "allow"), ("deny-a", no, "deny"), ("ignore-a", 0, "ignore, nobody after it: allowed"),
                 ("empty-a", 0, "an empty 200"), ("s403-a", no, "status 403"), ("s500-a", down, "status 500: on error deny"),
                 ("garbage-a", down, "a body that is not JSON"), ("badresult-a", down, "result \"maybe\"")]
        for user, want, what in cases:
            t.eq(connack(g.port, version, f"{user}-{version}", user, b"pw"), want, f"v{version} {what}: CONNACK {want:#x}")
        t0 = time.monotonic()
        rc = connack(g.port, version, f"slow-{version}", "slow-a", b"pw")
        took = time.monotonic() - t0
        t.check(rc == 0 and took >= 0.19, f"v{version} a 200 ms answer: CONNACK 0 after it ({took * 1000:.0f} ms)", rc)
        t0 = time.monotonic()
        rc = connack(g.port, version, f"hang-{version}", "hang-a", b"pw")
        took = time.monotonic() - t0
        t.check(rc == down and 0.45 <= took < 2.0,
                f"v{version} no answer within MGATE_WEBHOOK_TIMEOUT=500ms: CONNACK {down:#x} ({took * 1000:.0f} ms)",
                f"{rc} after {took:.2f} s")
    r = svc.last(lambda r: r.get("client_id") == "allow-a-5")
    t.check(r is not None, "the service got the CONNECT as JSON")
    if r:
        t.eq({k: r.get(k) for k in ("action", "client_id", "username", "password", "protocol", "listener", "cn")},
             {"action": "connect", "client_id": "allow-a-5", "username": "allow-a", "password": "pw", "protocol": 5,
              "listener": "mqtt_without_tls", "cn": None}, "its fields: action, client id, username, password, protocol...")
        t.check(str(r.get("peer", "")).startswith("127.0.0.1:"), "... and the peer address", r.get("peer"))
    c = h.RawClient(g.port)
    c.connect(5, "allow-bin", username="allow-bin", password=b"\xff\x00\"\\")
    c.close()
    r = svc.last(lambda r: r.get("client_id") == "allow-bin")
    t.eq(r and r.get("password_base64"), "/wAiXA==", "a password that is not UTF-8 goes as password_base64")
    c = h.RawClient(g.port)
    c.connect(5, 'allow-"quoted"\\id', username="allow-q")
    c.close()
    r = svc.last(lambda r: r.get("username") == "allow-q")
    t.eq(r and r.get("client_id"), 'allow-"quoted"\\id', "quotes and backslashes are escaped")


def publish_subscribe(t, g, svc):
    w = h.raw_client(g.port, 5, "sub-w", username="allow-w")
    t.eq(w.subscribe(1, [("t/+/allow-x", 1), ("t/+/deny-x", 1), ("t/a/allow-y", 1), ("t/+/ignore-z", 1)]),
         [1, 0x87, 1, 1], "SUBSCRIBE: each filter asked; deny refused (0x87), allow and ignore granted")
    r = svc.last(lambda r: r.get("action") == "subscribe" and r.get("topic") == "t/+/allow-x")
    t.check(r and r.get("qos") == 1 and r.get("username") == "allow-w" and "password" not in r,
            "the subscribe request has topic, QoS, username, no password", r)
    p = h.raw_client(g.port, 5, "pub-p", username="allow-p")
    t.eq(p.publish_wait("t/1/deny-x", b"no", 1, 1), 0x87, "PUBLISH the webhook denies: PUBACK 0x87")
    p.publish("t/1/deny-x", b"no-qos0")
    t.check(p.publish_wait("t/1/allow-x", b"yes", 1, 2) < 0x80, "PUBLISH it allows: PUBACK 0")
    r = svc.last(lambda r: r.get("action") == "publish" and r.get("topic") == "t/1/allow-x")
    t.check(r and r.get("qos") == 1 and r.get("retain") is False and r.get("client_id") == "pub-p",
            "the publish request has topic, QoS, retain, client id", r)
    msgs, found = w.collect_until(lambda m: m.payload == b"yes", 5.0)
    t.eq([m.payload for m in msgs], [b"yes"], "the subscriber gets only the allowed message")
    t.eq(svc.count(lambda r: r.get("action") == "subscribe" and r.get("topic") == "t/1/allow-x"), 0,
         "deliveries are not sent to the webhook")
    p.close()
    w.close()


def many_at_once(t, tmp, broker, svc):
    g = gate(tmp, broker, svc.url, MGATE_WORKERS="1", MGATE_WEBHOOK_TIMEOUT="5s")
    n = 100
    svc.max_inflight = 0
    codes, took = h.connect_burst(g.port, 4, [(f"many-{i}", f"slow-{i}", b"pw") for i in range(n)])
    t.eq(codes, [0] * n, f"{n} clients whose webhook answer takes 200 ms: all CONNACK 0")
    t.check(took < 1.5, f"... in {took * 1000:.0f} ms, not {n * 0.2:.0f} s (requests run concurrently)", took)
    t.check(svc.max_inflight > 10, f"the service saw {svc.max_inflight} requests at once")
    g.stop()

    g = gate(tmp, broker, svc.url, MGATE_WORKERS="1", MGATE_WEBHOOK_CONCURRENCY="2", MGATE_WEBHOOK_TIMEOUT="5s")
    svc.max_inflight = 0
    n = 6
    codes, took = h.connect_burst(g.port, 4, [(f"bounded-{i}", f"slow-b{i}", b"pw") for i in range(n)])
    t.eq(codes, [0] * n, f"MGATE_WEBHOOK_CONCURRENCY=2: {n} slow CONNECTs all allowed")
    t.eq(svc.max_inflight, 2, "... with at most 2 requests in flight")
    t.check(took >= 0.55, f"... in waves ({took * 1000:.0f} ms >= 3 x 200 ms)")
    g.stop()


def shutdown_in_flight(t, tmp, broker, svc):
    """SIGTERM with webhook requests in flight and queued: each is denied at shutdown, and its
    session, which the pending answer keeps, is freed before mgate exits (before, the requests
    were dropped with their sessions held: a leak that ASan reported at exit)."""
    g = gate(tmp, broker, svc.url, MGATE_WORKERS="1", MGATE_WEBHOOK_CONCURRENCY="2", MGATE_WEBHOOK_TIMEOUT="10s",
             MGATE_SHUTDOWN_GRACE="0s")
    # two requests in flight, four queued
    h.stop_with_connects_in_flight(t, g, [(f"down-{i}", f"hang-d{i}", b"pw") for i in range(6)], 0.3,
                                   "webhook requests denied at shutdown", "webhook requests")


def down_and_on_error(t, tmp, broker):
    dead = f"http://{h.HOST}:{h.free_port()}/auth"
    g = gate(tmp, broker, dead)
    t.eq(connack(g.port, 4, "down-1", "allow-d", b"pw"), 3, "service down, ON_ERROR deny (default): CONNACK 3")
    t.eq(connack(g.port, 5, "down-2", "allow-d", b"pw"), 0x88, "v5: CONNACK 0x88 (server unavailable)")
    t.check(g.log.search(r"http: connect .*error"), "the failure is logged", g.log.text()[-300:])
    g.stop()
    g = gate(tmp, broker, dead, MGATE_WEBHOOK_ON_ERROR="allow")
    t.eq(connack(g.port, 5, "down-3", "deny-d", b"pw"), 0, "service down, ON_ERROR allow: CONNACK 0")
    g.stop()


def cache(t, tmp, broker, svc):
    g = gate(tmp, broker, svc.url, MGATE_WEBHOOK_CACHE_TTL="1s", MGATE_WORKERS="1")
    asked = lambda: svc.count(lambda r: r.get("client_id") == "cached")  # noqa: E731
    t.eq(connack(g.port, 4, "cached", "allow-c", b"pw"), 0, "cache: first CONNECT allowed")
    t.eq(connack(g.port, 4, "cached", "allow-c", b"pw"), 0, "cache: the same again")
    t.eq(asked(), 1, "cache: the service was asked once")
    t.eq(connack(g.port, 4, "cached", "allow-c", b"other"), 0, "cache: another password is another entry")
    t.eq(asked(), 2, "... asked again")
    t.eq(connack(g.port, 4, "cached-d", "deny-c", b"pw"), 5, "cache: a deny")
    t.eq(connack(g.port, 4, "cached-d", "deny-c", b"pw"), 5, "cache: the deny again")
    t.eq(svc.count(lambda r: r.get("client_id") == "cached-d"), 1, "cache: denies are cached too")
    t.eq(connack(g.port, 4, "cached-e", "s500-c", b"pw"), 3, "cache: an error")
    t.eq(connack(g.port, 4, "cached-e", "s500-c", b"pw"), 3, "cache: the error again")
    t.eq(svc.count(lambda r: r.get("client_id") == "cached-e"), 2, "cache: errors are not cached")
    time.sleep(1.1)  # the TTL
    t.eq(connack(g.port, 4, "cached", "allow-c", b"pw"), 0, "cache: after the TTL")
    t.eq(asked(), 3, "... the service is asked again")
    g.stop()


def large_subscribe(t, tmp, broker, svc):
    """A SUBSCRIBE is one request a filter: at most 1024 are asked (the rest refused unasked), and
    they are sent in turn with other clients' requests, one of each a round, so a client's large
    SUBSCRIBE delays its own SUBACK, not everyone's CONNECT."""
    g = gate(tmp, broker, svc.url, MGATE_WORKERS="1", MGATE_WEBHOOK_CONCURRENCY="4", MGATE_WEBHOOK_TIMEOUT="5s",
             MGATE_MQTT_WITHOUT_TLS_CONNECT_TIMEOUT="30s")
    c = h.raw_client(g.port, 5, "big-sub", username="allow-big", password=b"pw")
    before = svc.count(lambda r: r.get("action") == "subscribe")
    filters = [(f"t/{i}/slow{i}", 0) for i in range(40)] + [(f"u/{i}/allow{i}", 0) for i in range(1100)]
    c.send(h.subscribe_packet(5, 9, filters))
    time.sleep(0.3)  # its requests are queued and the first ones in flight (200 ms each)
    start = time.monotonic()
    rc = connack(g.port, 4, "other-client", "allow-other", b"pw", timeout=10.0)
    took = time.monotonic() - start
    t.eq(rc, 0, "another client's CONNECT behind the large SUBSCRIBE is allowed")
    t.check(took < 1.5, f"... within one round of the slow requests ({took:.2f} s; in line behind them, about "
                        "40 x 200 ms / 4 = 2 s and more)")
    p = c.expect(h.SUBACK, 30.0)
    codes = list(p.body[3:]) if len(p.body) > 3 else []
    t.eq(len(codes), 1140, "the large SUBSCRIBE gets its SUBACK, one code a filter")
    t.check(codes[:1024] == [0] * 1024 and codes[1024:] == [0x87] * 116,
            "the first 1024 filters were asked (allowed), the rest refused unasked (0x87)", codes[1020:1030])
    asked = svc.count(lambda r: r.get("action") == "subscribe") - before
    t.eq(asked, 1024, "the webhook was asked 1024 times")
    c.close()
    g.stop()


def chain(t, tmp, broker, svc):
    pwfile = os.path.join(tmp, "passwd")
    subprocess.run(["mosquitto_passwd", "-c", "-b", pwfile, "ignore-carl", "carl-pw"], check=True, capture_output=True)
    g = gate(tmp, broker, svc.url, MGATE_HANDLER="http,acl", MGATE_ACL_PASSWORD_FILE=pwfile)
    t.eq(connack(g.port, 4, "ch-1", "ignore-carl", b"carl-pw"), 0, "http,acl: the webhook ignores, acl checks: right password")
    t.eq(connack(g.port, 4, "ch-2", "ignore-carl", b"nope"), 4, "http,acl: ... wrong password: CONNACK 4 from acl")
    t.eq(connack(g.port, 4, "ch-3", "deny-carl", b"carl-pw"), 5, "http,acl: the webhook denies first")
    t.eq(connack(g.port, 4, "ch-4", "allow-zed", b"x"), 0, "http,acl: the webhook allows first (acl not asked)")
    g.stop()


def startup(t, tmp, broker, svc):
    cases = [({"MGATE_HANDLER": "http"}, "MGATE_HANDLER: \"http\" needs MGATE_WEBHOOK_URL"),
             ({"MGATE_HANDLER": "http", "MGATE_WEBHOOK_URL": "ftp://x"}, "MGATE_WEBHOOK_URL: \"ftp://x\" is not an http"),
             ({"MGATE_HANDLER": "http", "MGATE_WEBHOOK_URL": svc.url, "MGATE_WEBHOOK_ON_ERROR": "maybe"},
              "MGATE_WEBHOOK_ON_ERROR: \"maybe\""),
             ({"MGATE_HANDLER": "log", "MGATE_WEBHOOK_URL": svc.url}, "MGATE_WEBHOOK_URL is set, but MGATE_HANDLER"),
             ({"MGATE_HANDLER": "http", "MGATE_WEBHOOK_URL": svc.url, "MGATE_WEBHOOK_TIMEOUT": "0"},
              "MGATE_WEBHOOK_TIMEOUT"),
             ({"MGATE_HANDLER": "http", "MGATE_WEBHOOK_URL": svc.url, "MGATE_WEBHOOK_CONCURRENCY": "0"},
              "MGATE_WEBHOOK_CONCURRENCY")]
    for env, want in cases:
        e = h.mgate_env(h.free_port(), broker.port, **env)
        r = subprocess.run([h.MGATE_BIN, "--check-config"], env=e, cwd=tmp, capture_output=True, text=True, timeout=10)
        t.check(r.returncode == 2 and want in r.stderr, f"{env}: exit 2 naming {want.split(':')[0]}",
                f"{r.returncode} {r.stderr.strip()}")


def main():
    h.need_binaries()
    t = h.Checks("webhook")
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service()
        broker = h.start_mosquitto(tmp)
        g = gate(tmp, broker, svc.url)
        t.case("CONNECT verdicts", connect_verdicts, t, g, svc)
        t.case("PUBLISH and SUBSCRIBE", publish_subscribe, t, g, svc)
        g.stop()
        t.case("many at once, bounded", many_at_once, t, tmp, broker, svc)
        t.case("shutdown with requests in flight", shutdown_in_flight, t, tmp, broker, svc)
        t.case("service down", down_and_on_error, t, tmp, broker)
        t.case("cache", cache, t, tmp, broker, svc)
        t.case("a large SUBSCRIBE", large_subscribe, t, tmp, broker, svc)
        t.case("chain http,acl", chain, t, tmp, broker, svc)
        t.case("start-up errors", startup, t, tmp, broker, svc)
        code = h.finish(t)
        svc.stop()
        return code


if __name__ == "__main__":
    h.run_main(main)
