#!/usr/bin/python3
"""CLIENT_ID_POLICY: client ids bound to the identity a client proved (issue 14, item 5).

Without it a client can take another user's client id: the broker kicks that user off and,
with a persistent session, hands the newcomer what it queued for the other user; a `%c` ACL
rule (`pattern read clients/%c/inbox`) then gives it the other user's inbox.

* Each policy (any, equal, prefix with the default and with CLIENT_ID_SEPARATORS, pattern) over
  3.1, 3.1.1 and 5.0: allowed ids get CONNACK 0, refused ones CONNACK 2 / 0x85 and never reach
  the broker; anonymous clients and empty (server-assigned) ids are refused under every policy
  but `any`; a username that holds a separator is refused under `prefix`; REFUSAL=close closes.
  A refusal is logged with the client id and username.
* The attack, with the `acl` handler and `pattern read clients/%c/inbox`: under `any` (the
  default) bob takes alice's id, kicks her off and reads her queued message; under `equal` and
  `prefix` bob is refused (2 / 0x85), alice stays connected, and her queued message waits for
  her.
* The identity as finally given to the broker: a client id the handler rewrites (mgate-example
  renames rename-me to renamed) is judged after the rewrite; USE_CN_AS_USERNAME's CN is the
  username `equal` compares with.
* `%cn` patterns on the mTLS listener; a client without a certificate has no CN.
* The WebSocket listener goes through the same CONNECT path.
* Bad settings: exit 2 with a message naming the variable (environment and INI).
"""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
import harness as h  # noqa: E402

M = "MGATE_MQTT_WITHOUT_TLS_"
WS = "MGATE_MQTT_WS_WITHOUT_TLS_"
MTLS = "MGATE_MQTT_WITH_MTLS_"
REFUSED = {3: 2, 4: 2, 5: 0x85}  # "identifier rejected" / "client identifier not valid"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "sender": "sender-pw", "bob-x": "bobx-pw"}
ACL = """\
user sender
topic write clients/#

pattern read clients/%c/inbox
"""


def connack(port, version, cid, user=None, password=None, clean=True, props=()):
    """The CONNACK code (None when closed without one); the connection is closed after."""
    c = h.RawClient(port)
    try:
        return c.connect(version, cid, username=user, password=password, clean=clean, props=props)
    finally:
        c.close()


def policy_gate(tmp, broker, **env):
    return h.Mgate(tmp, broker.port, **{M + k: v for k, v in env.items()})


# (client id, username, allowed) per policy; each is tried in 3.1.1 and 5.0.
CASES = {
    "any": [("bob", "alice", True), ("anon-1", None, True), ("", "alice", True)],
    "equal": [("alice", "alice", True), ("bob", "alice", False), ("alice-1", "alice", False),
              ("Alice", "alice", False), ("alice", None, False), ("", "alice", False)],
    "prefix": [("alice-phone", "alice", True), ("alice-", "alice", True), ("alice", "alice", False),
               ("alicephone", "alice", False), ("alice_phone", "alice", False), ("alice-phone", "bob", False),
               ("bobby-1", "bob", False), ("bob-x-1", "bob-x", False), ("alice-1", None, False),
               ("", "alice", False)],
    "prefix :_": [("alice:1", "alice", True), ("alice_1", "alice", True), ("bob-x:1", "bob-x", True),
                  ("alice-1", "alice", False), ("alice", "alice", False)],
    "pattern dev/%u/*": [("dev/alice/1", "alice", True), ("dev/alice/", "alice", True),
                         ("dev/alice", "alice", False), ("dev/bob/1", "alice", False),
                         ("x/alice/1", "alice", False), ("dev/a/b/1", "a/b", False),
                         ("dev/alice/1", None, False), ("", "alice", False)],
}


def gate_for(tmp, broker, name, **extra):
    words = name.split(" ", 1)
    env = {"CLIENT_ID_POLICY": words[0], **extra} if words[0] != "any" else dict(extra)
    if words[0] == "prefix" and len(words) > 1:
        env["CLIENT_ID_SEPARATORS"] = words[1]
    if words[0] == "pattern":
        env["CLIENT_ID_PATTERN"] = words[1]
    return policy_gate(tmp, broker, **env)


def policies(t, tmp, broker):
    for name, cases in CASES.items():
        g = gate_for(tmp, broker, name)
        for version in (4, 5):
            for cid, user, allowed in cases:
                mark = broker.log.mark()
                want = 0 if allowed else REFUSED[version]
                what = f"{name}: v{version} id {cid!r} user {user!r}: CONNACK {want:#x}"
                t.eq(connack(g.port, version, cid, user), want, what)
                if not allowed and cid:
                    t.check(not broker.saw_client(cid, mark), f"{name}: ... the broker never saw {cid!r}")
        t.check(g.alive(), f"{name}: mgate still runs")
    g = gate_for(tmp, broker, "equal")
    t.eq(connack(g.port, 3, "bob", "alice"), 2, "equal: MQTT 3.1 client with another's id: CONNACK 2")
    t.eq(connack(g.port, 3, "alice", "alice"), 0, "equal: MQTT 3.1 client with its own id: CONNACK 0")
    mark = g.log.mark()
    connack(g.port, 4, "mallory-id", "alice")
    line = h.wait_until(lambda: next((j for j in g.json_since(mark) if "CLIENT_ID_POLICY" in j.get("msg", "")),
                                     None), 3.0)
    t.check(line is not None and line.get("client_id") == "mallory-id" and line.get("username") == "alice"
            and "CLIENT_ID_POLICY=equal" in line.get("msg", ""),
            "equal: the refusal is logged with the client id, username and policy", str(line))
    c = h.RawClient(gate_for(tmp, broker, "equal", REFUSAL="close").port)
    t.eq(c.connect(4, "bob", username="alice"), None, "equal + REFUSAL=close: closed without a CONNACK")
    c.close()


def make_password_file(path):
    for i, (user, password) in enumerate(PASSWORDS.items()):
        args = ["mosquitto_passwd", "-H", "sha512"] + (["-c"] if i == 0 else []) + ["-b", path, user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=10)


def login(port, version, cid, user, clean=True, subscribe=None):
    props = [(h.P_SESSION_EXPIRY, 300)] if version == 5 and not clean else ()
    c = h.RawClient(port)
    rc = c.connect(version, cid, username=user, password=PASSWORDS[user].encode(), clean=clean, props=props)
    return c, rc


def attack(t, tmp, broker, acl_env, policy, alice_id, version, extra=None):
    """alice subscribes to her inbox with a persistent session; bob tries her client id while she is
    connected, then after she left and the sender queued a message for her."""
    g = h.Mgate(tmp, broker.port, **acl_env, **({M + "CLIENT_ID_POLICY": policy} if policy != "any" else {}),
                **(extra or {}))
    tag = f"{policy}: v{version}"
    inbox = f"clients/{alice_id}/inbox"
    alice, rc = login(g.port, version, alice_id, "alice", clean=False)
    t.eq(rc, 0, f"{tag}: alice connects as {alice_id!r} with a persistent session")
    t.eq(alice.subscribe(1, [(inbox, 1)]), [1], f"{tag}: alice subscribes to {inbox} (the %c rule)")
    mark = broker.log.mark()
    bob, rc = login(g.port, version, alice_id, "bob", clean=False)
    bob.close()
    if policy == "any":
        t.eq(rc, 0, f"{tag}: bob takes alice's id (today's behaviour: the attack works)")
        t.check(h.wait_until(lambda: broker.log.search(r"Client " + alice_id + r" already connected", mark), 3.0),
                f"{tag}: ... and the broker kicked alice off")
    else:
        t.eq(rc, REFUSED[version], f"{tag}: bob with alice's id {alice_id!r} gets CONNACK {REFUSED[version]:#x}")
        t.eq(alice.ping(), True, f"{tag}: ... alice is still connected")
        kicked = broker.log.search(r"Client " + alice_id + r" already connected", mark)
        t.check(not kicked, f"{tag}: ... the broker never saw bob's CONNECT (alice was not kicked off)")
    alice.close()

    sender, rc = login(g.port, version, "sender" if policy == "equal" else "sender-1", "sender")
    t.eq(rc, 0, f"{tag}: the sender connects")
    t.eq(sender.publish_wait(inbox, b"for alice only", 1, 7), 0, f"{tag}: the sender queues a message in alice's inbox")
    sender.close()
    bob, rc = login(g.port, version, alice_id, "bob", clean=False)
    if policy == "any":
        t.eq(rc, 0, f"{tag}: bob connects with alice's id and her session")
        got = [m.payload for m in bob.collect(1, 3.0)] if rc == 0 else []
        t.eq(got, [b"for alice only"], f"{tag}: ... and gets the message queued for alice (the issue's attack)")
    else:
        t.eq(rc, REFUSED[version], f"{tag}: bob with alice's id after she left: CONNACK {REFUSED[version]:#x}")
    bob.close()
    alice, rc = login(g.port, version, alice_id, "alice", clean=False)
    got = [m.payload for m in alice.collect(1, 3.0)] if rc == 0 else []
    if policy != "any":
        t.eq(got, [b"for alice only"], f"{tag}: alice reconnects and gets her queued message")
    alice.close()
    alice, rc = login(g.port, version, alice_id, "alice", clean=True)  # end her session for the next run
    alice.disconnect()
    alice.close()
    g.stop()


def attacks(t, tmp, broker):
    pwfile, aclfile = os.path.join(tmp, "passwd"), os.path.join(tmp, "acl")
    make_password_file(pwfile)
    with open(aclfile, "w") as f:
        f.write(ACL)
    acl_env = {"MGATE_HANDLER": "acl", "MGATE_ACL_PASSWORD_FILE": pwfile, "MGATE_ACL_FILE": aclfile}
    for version in (4, 5):
        attack(t, tmp, broker, acl_env, "any", "alice", version)
        attack(t, tmp, broker, acl_env, "equal", "alice", version)
        attack(t, tmp, broker, acl_env, "prefix", "alice-phone", version)


def rewritten(t, tmp, broker):
    g = h.Mgate(tmp, broker.port, binary=h.EXAMPLE_BIN, **{M + "CLIENT_ID_POLICY": "equal"})
    mark = broker.log.mark()
    t.eq(connack(g.port, 4, "rename-me", "renamed"), 0,
         "equal: the handler renames rename-me to renamed, the username: CONNACK 0")
    t.check(broker.wait_client("renamed", 3.0, mark), "... the broker saw client renamed")
    t.eq(connack(g.port, 4, "rename-me", "rename-me"), 2,
         "equal: id rename-me, username rename-me: judged after the rename (renamed): CONNACK 2")
    t.eq(connack(g.port, 5, "rename-me", "rename-me"), 0x85, "... in 5.0: 0x85")


def mtls(t, tmp, broker):
    pki = h.Pki(tmp)
    g = h.TlsGate(tmp, broker.port, pki, CLIENT_CERT="optional", CLIENT_ID_POLICY="pattern",
                  CLIENT_ID_PATTERN="%cn:*")
    ctx = pki.tls_context("client")  # CN dev00001
    for version in (4, 5):
        code, err, c = h.tls_mqtt(g.tls_port, ctx, "dev00001:sensor", version=version)
        t.eq(code, 0, f"pattern %cn:*: v{version} client.crt (CN dev00001) as dev00001:sensor: CONNACK 0")
        if c:
            c.close()
        for cid in ("dev00002:sensor", "dev00001", "xdev00001:1"):
            code, err, c = h.tls_mqtt(g.tls_port, ctx, cid, version=version, username="dev00001")
            t.eq(code, REFUSED[version], f"pattern %cn:*: v{version} client.crt as {cid}: CONNACK {REFUSED[version]:#x}")
        code, err, c = h.tls_mqtt(g.tls_port, pki.tls_context(None), "dev00001:sensor", version=version,
                                  username="dev00001")
        t.eq(code, REFUSED[version], f"pattern %cn:*: v{version} no certificate (no CN), username dev00001: refused")
    cn = h.TlsGate(tmp, broker.port, pki, USE_CN_AS_USERNAME="true", CLIENT_ID_POLICY="equal")
    code, err, c = h.tls_mqtt(cn.tls_port, ctx, "dev00001", username="someone", password=b"x")
    t.eq(code, 0, "USE_CN_AS_USERNAME + equal: id dev00001 with client.crt (the CN replaces username someone)")
    if c:
        c.close()
    code, err, c = h.tls_mqtt(cn.tls_port, ctx, "someone", username="someone", password=b"x")
    t.eq(code, 2, "USE_CN_AS_USERNAME + equal: id someone = the username sent, not the CN: CONNACK 2")


def websocket(t, tmp, broker):
    port = h.free_port()
    env = {WS + "HOST": h.HOST, WS + "PORT": port, WS + "TARGET_HOST": h.HOST, WS + "TARGET_PORT": broker.port,
           WS + "TARGET_PROTOCOL": "mqtt", WS + "PATH_PREFIX": "/mqtt", WS + "CLIENT_ID_POLICY": "equal"}
    h.Mgate(tmp, broker.port, **env)
    h.wait_port(port)
    mqtt = h.paho()
    for proto, want, name in ((mqtt.MQTTv311, "2", "3.1.1"), (mqtt.MQTTv5, "133", "5.0")):
        try:
            h.PahoClient(port, "alice", proto, username="bob", ws_path="/mqtt").stop()
            got = "0"
        except AssertionError as e:
            got = str(e).rsplit(" ", 1)[-1]
        t.eq(got, want, f"ws equal: {name} bob with id alice refused")
        h.PahoClient(port, "alice", proto, username="alice", ws_path="/mqtt").stop()
        t.check(True, f"ws equal: {name} alice with id alice connects")


def bad_config(t, tmp, broker):
    base = h.mgate_env(h.free_port(), broker.port)
    cases = (
        ({M + "CLIENT_ID_POLICY": "username"}, f'{M}CLIENT_ID_POLICY: "username" is not a client id policy'),
        ({M + "CLIENT_ID_POLICY": "pattern"}, f"{M}CLIENT_ID_PATTERN is required"),
        ({M + "CLIENT_ID_POLICY": "pattern", M + "CLIENT_ID_PATTERN": "%u*"}, f'{M}CLIENT_ID_PATTERN: "%u*"'),
        ({M + "CLIENT_ID_POLICY": "pattern", M + "CLIENT_ID_PATTERN": "dev-1"}, f'{M}CLIENT_ID_PATTERN: "dev-1"'),
        ({M + "CLIENT_ID_POLICY": "pattern", M + "CLIENT_ID_PATTERN": "%cn"}, f"{M}CLIENT_ID_PATTERN uses %cn"),
        ({M + "CLIENT_ID_PATTERN": "%u"}, f"{M}CLIENT_ID_PATTERN is set but {M}CLIENT_ID_POLICY"),
        ({M + "CLIENT_ID_POLICY": "prefix", M + "CLIENT_ID_SEPARATORS": "x"}, f'{M}CLIENT_ID_SEPARATORS: "x"'),
        ({"MGATE_HTTP_WITHOUT_TLS_CLIENT_ID_POLICY": "equal"}, "MGATE_HTTP_WITHOUT_TLS_CLIENT_ID_POLICY"),
    )
    for env, want in cases:
        r = subprocess.run([h.MGATE_BIN, "--check-config"], env={**base, **env}, capture_output=True, text=True,
                           timeout=10, cwd=tmp)
        t.check(r.returncode == 2 and want in r.stderr, f"{env}: exit 2 naming the variable",
                f"exit {r.returncode}: {r.stderr.strip()[:300]}")
    ini = os.path.join(tmp, "cid.ini")
    with open(ini, "w") as f:
        f.write("[mqtt_without_tls]\nclient_id_policy = prefix\nclient_id_separators = :\n")
    r = subprocess.run([h.MGATE_BIN, "--check-config", "-c", ini], env=base, capture_output=True, text=True,
                       timeout=10, cwd=tmp)
    t.check(r.returncode == 0, "INI: client_id_policy and client_id_separators in [mqtt_without_tls]", r.stderr)
    with open(ini, "w") as f:
        f.write("[mqtt_without_tls]\nclient_id_policy = sometimes\n")
    r = subprocess.run([h.MGATE_BIN, "--check-config", "-c", ini], env=base, capture_output=True, text=True,
                       timeout=10, cwd=tmp)
    t.check(r.returncode == 2 and f"cid.ini:2: client_id_policy ({M}CLIENT_ID_POLICY)" in r.stderr,
            "INI: a bad client_id_policy exits 2 with file, line and variable", r.stderr.strip())


def main():
    h.need_binaries()
    t = h.Checks("client_id")
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o711)
        broker = h.start_mosquitto(tmp)
        t.case("policies", policies, t, tmp, broker)
        t.case("the attack, with acl and %c", attacks, t, tmp, broker)
        t.case("the identity after the handler", rewritten, t, tmp, broker)
        t.case("%cn and USE_CN_AS_USERNAME on mTLS", mtls, t, tmp, broker)
        t.case("WebSocket", websocket, t, tmp, broker)
        t.case("bad settings", bad_config, t, tmp, broker)
        return h.finish(t)


if __name__ == "__main__":
    h.run_main(main)
