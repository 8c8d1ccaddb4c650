"""A minimal DTLS 1.2 PSK client on the system's libssl (ctypes, memory BIOs), for what
coap-client-openssl cannot do: put several records in one datagram. Loopback only; no
retransmission but one flight resent after each second of silence."""
import ctypes
import socket

_ssl = ctypes.CDLL("libssl.so.3")
_P, _I = ctypes.c_void_p, ctypes.c_int
for name, res, args in (("DTLS_client_method", _P, []), ("SSL_CTX_new", _P, [_P]), ("SSL_CTX_free", None, [_P]),
                        ("SSL_new", _P, [_P]), ("SSL_free", None, [_P]), ("BIO_s_mem", _P, []),
                        ("BIO_new", _P, [_P]), ("SSL_set_bio", None, [_P, _P, _P]),
                        ("SSL_set_connect_state", None, [_P]), ("SSL_do_handshake", _I, [_P]),
                        ("SSL_get_error", _I, [_P, _I]), ("SSL_set_options", ctypes.c_uint64, [_P, ctypes.c_uint64]),
                        ("SSL_ctrl", ctypes.c_long, [_P, _I, ctypes.c_long, _P]), ("BIO_read", _I, [_P, _P, _I]),
                        ("BIO_write", _I, [_P, _P, _I]), ("SSL_write", _I, [_P, _P, _I]),
                        ("SSL_read", _I, [_P, _P, _I]), ("SSL_CTX_set_cipher_list", _I, [_P, ctypes.c_char_p])):
    f = getattr(_ssl, name)
    f.restype, f.argtypes = res, args
_PSK_CB = ctypes.CFUNCTYPE(ctypes.c_uint, _P, ctypes.c_char_p, _P, ctypes.c_uint, _P, ctypes.c_uint)
_ssl.SSL_CTX_set_psk_client_callback.argtypes = [_P, _PSK_CB]
_ssl.SSL_CTX_set_psk_client_callback.restype = None

SSL_OP_NO_QUERY_MTU, SSL_CTRL_SET_MTU, DTLS_CTRL_HANDLE_TIMEOUT, SSL_ERROR_WANT_READ = 0x1000, 17, 74, 2


class PskClient:
    def __init__(self, host, port, identity, key, local_port=0, ciphers=b"PSK"):
        self.addr = (host, port)
        self.ctx = _ssl.SSL_CTX_new(_ssl.DTLS_client_method())
        _ssl.SSL_CTX_set_cipher_list(self.ctx, ciphers)

        def cb(_s, _hint, ident, max_ident, psk, max_psk):
            if len(identity) + 1 > max_ident or len(key) > max_psk:
                return 0
            ctypes.memmove(ident, identity + b"\0", len(identity) + 1)
            ctypes.memmove(psk, key, len(key))
            return len(key)
        self.cb = _PSK_CB(cb)  # kept alive as long as the context
        _ssl.SSL_CTX_set_psk_client_callback(self.ctx, self.cb)
        self.ssl = _ssl.SSL_new(self.ctx)
        self.rbio, self.wbio = _ssl.BIO_new(_ssl.BIO_s_mem()), _ssl.BIO_new(_ssl.BIO_s_mem())
        _ssl.SSL_set_bio(self.ssl, self.rbio, self.wbio)
        _ssl.SSL_set_options(self.ssl, SSL_OP_NO_QUERY_MTU)  # a memory BIO knows no MTU
        _ssl.SSL_ctrl(self.ssl, SSL_CTRL_SET_MTU, 1400, None)
        _ssl.SSL_set_connect_state(self.ssl)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, local_port))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(3)
        self.buf = ctypes.create_string_buffer(65536)

    def _flush(self):
        """What the SSL wrote since the last time, as one datagram."""
        n = _ssl.BIO_read(self.wbio, self.buf, len(self.buf))
        if n > 0:
            self.sock.sendto(self.buf.raw[:n], self.addr)
        return max(n, 0)

    def _feed(self):
        d = self.sock.recv(65536)
        _ssl.BIO_write(self.rbio, d, len(d))

    def handshake(self, resends=0):
        """resends: how many times a flight may be sent again after a second of silence."""
        self.sock.settimeout(1.2 if resends else 3)
        try:
            for _ in range(16):
                r = _ssl.SSL_do_handshake(self.ssl)
                self._flush()
                if r == 1:
                    return True
                if _ssl.SSL_get_error(self.ssl, r) != SSL_ERROR_WANT_READ:
                    return False
                try:
                    self._feed()
                except socket.timeout:
                    if not resends:
                        return False
                    resends -= 1
                    _ssl.SSL_ctrl(self.ssl, DTLS_CTRL_HANDLE_TIMEOUT, 0, None)  # its timer ran out: resend
                    self._flush()
            return False
        finally:
            self.sock.settimeout(3)

    def send_records(self, *payloads):
        """Each payload its own record, all of them in one datagram; its size."""
        for p in payloads:
            _ssl.SSL_write(self.ssl, p, len(p))
        return self._flush()

    def recv(self):
        """The next record's payload, or None on a timeout."""
        try:
            self._feed()
        except socket.timeout:
            return None
        n = _ssl.SSL_read(self.ssl, self.buf, len(self.buf))
        return self.buf.raw[:n] if n > 0 else b""

    def close(self):
        self.sock.close()
        _ssl.SSL_free(self.ssl)
        _ssl.SSL_CTX_free(self.ctx)
