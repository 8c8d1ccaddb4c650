"""What bench/ws_idle.py and bench/ws_cpu.py share: mosquitto, and one mgate (one worker) with a
ws:// or wss:// listener in front of its TCP listener (MGATE_BIN picks the binary)."""
import os
import ssl
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
sys.dont_write_bytecode = True
import harness as h  # noqa: E402


def start(tmp, tls, **extra):
    """(broker, mgate, the listener's port, an SSL context for wss:// clients or None)."""
    # mosquitto's Nagle (set_tcp_nodelay is off by default) meets the receiver's delayed ACK:
    # 40 ms stalls that would measure the broker, not mgate
    broker = h.start_mosquitto(tmp, "set_tcp_nodelay true\n")
    prefix = "MGATE_MQTT_WS_WITH_TLS_" if tls else "MGATE_MQTT_WS_WITHOUT_TLS_"
    port = h.free_port()
    env = {prefix + "HOST": h.HOST, prefix + "PORT": port, prefix + "TARGET_HOST": h.HOST,
           prefix + "TARGET_PORT": broker.port, prefix + "TARGET_PROTOCOL": "mqtt",
           **{prefix + k: v for k, v in extra.items()}}
    ctx = None
    if tls:
        pki = h.Pki(tmp)
        env.update({prefix + "CERT_FILE": pki["server.crt"], prefix + "KEY_FILE": pki["server.key"]})
        ctx = ssl.create_default_context(cafile=pki["ca.crt"])
    g = h.Mgate(tmp, broker.port, port=port, MGATE_MQTT_WITHOUT_TLS_PORT=None, MGATE_WORKERS=1,
                MGATE_LOG_LEVEL="warn", **env)
    return broker, g, port, ctx
