/*
 * One tunnelled TCP connection in reliable mode, both directions, as a pure
 * state machine (docs/TUNNEL.md): no sockets, no clock of its own (every
 * call is given now_ms), no MQTT.  The runtime (tunnel.c) feeds it the TCP
 * side's bytes and the peer's frames, and it answers through the io
 * callbacks: frames to publish, bytes to write to TCP, pause/resume of the
 * TCP reads, a half-close, a reset.
 *
 * Every byte arrives once and in order, whatever the broker does (drops a
 * connection, redelivers, restarts with a persistent session):
 *
 *  - sending: bytes read from TCP are kept until the peer acknowledges them
 *    (cumulative ACK of the offset it has written), and at most `window`
 *    unacknowledged bytes exist (the peer's advertised window, never more
 *    than ours): past it, reading from TCP pauses.  DATA frames carry their
 *    stream offset; unacknowledged bytes are sent again from the last ACK
 *    on tunnel_stream_resend (a new MQTT connection) and when no ACK moved
 *    for rto_ms.  EOF on TCP sends FIN(final length) after the last byte,
 *    resent likewise until an ACK with TF_FIN_SEEN at that length.
 *  - receiving: a DATA frame is taken only for the part after what was
 *    already written (duplicates and overlaps are trimmed, a frame past a
 *    gap is dropped: the sender resends it).  ACKs go ack_delay_ms after
 *    new bytes, at once past a quarter of the window, and for every
 *    duplicate (so a lost ACK is replaced).  While the TCP side's output is
 *    over its mark (io->write returned false) no ACK advances: the sender's
 *    window closes, memory stays bounded.  A FIN at the offset written so
 *    far half-closes the TCP side (io->shutdown_write) and is acknowledged.
 *  - ending: done when both directions finished (our FIN acknowledged, the
 *    peer's FIN taken).  A peer's RST, a frame that breaks the rules (data
 *    past a FIN, an ACK beyond what was sent), or give_up_ms without
 *    progress while something waits for an ACK resets the stream:
 *    io->reset (the TCP side is closed with a RST, never as if complete)
 *    and, unless the peer sent it, an RST frame.
 */
#ifndef MGATE_TUNNEL_STREAM_H
#define MGATE_TUNNEL_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tunnel/frame.h"

struct tunnel_stream_cfg {
    uint32_t window;       /* bytes in flight per direction; default 256 KiB */
    uint32_t chunk;        /* DATA payload per frame, <= TUNNEL_MAX_CHUNK; default 32 KiB */
    uint32_t ack_delay_ms; /* default 20 */
    uint32_t rto_ms;       /* default 3000 */
    uint32_t give_up_ms;   /* default 60000 */
};

/* Any callback may be called from inside any tunnel_stream_* call.  A
 * callback must neither free the stream (the runtime frees it after
 * checking done / reset, outside the stream's calls) nor call into it; a
 * frame's payload is only valid during send (copy it to publish it). */
struct tunnel_stream_io {
    /* Publish f to the peer (QoS 1).  false: not now (MQTT output full, or
     * no connection): the stream sends it later (tunnel_stream_pump). */
    bool (*send)(void *ctx, const struct tunnel_frame *f);
    /* Bytes for the TCP side, all taken; false when its output is now over
     * its mark (then tunnel_stream_drained when it fell back). */
    bool (*write)(void *ctx, const uint8_t *p, size_t n);
    void (*shutdown_write)(void *ctx);         /* the peer's FIN: everything before it was written */
    void (*read_pause)(void *ctx, bool pause); /* stop / resume reading the TCP side */
    void (*reset)(void *ctx, const char *why); /* the stream is dead: close the TCP side with a RST */
};

struct tunnel_stream_stats {
    uint64_t bytes_out, bytes_in; /* TCP bytes sent to the peer (acknowledged), received and written */
    uint64_t resent;              /* DATA/FIN frames sent again */
    uint64_t dups;                /* frames received again (dropped or trimmed) */
};

struct tunnel_stream;

/* A stream with this id (the opener's), io and ctx (given back to every
 * callback), cfg (NULL or zero fields: defaults).  NULL when out of memory. */
struct tunnel_stream *tunnel_stream_new(uint64_t id, const struct tunnel_stream_cfg *cfg,
                                        const struct tunnel_stream_io *io, void *ctx);
void tunnel_stream_free(struct tunnel_stream *st);
uint64_t tunnel_stream_id(const struct tunnel_stream *st);

/* The TCP side: bytes read (copied), and EOF. */
void tunnel_stream_input(struct tunnel_stream *st, const uint8_t *p, size_t n, uint64_t now_ms);
void tunnel_stream_input_eof(struct tunnel_stream *st, uint64_t now_ms);
/* The TCP side's output fell below its mark: ACKs may advance again. */
void tunnel_stream_drained(struct tunnel_stream *st, uint64_t now_ms);
/* The TCP side failed (connection reset, refused): RST to the peer. */
void tunnel_stream_abort(struct tunnel_stream *st, const char *why, uint64_t now_ms);

/* A frame from the peer for this stream (the runtime finds the stream by
 * f->stream; an ACCEPT is the runtime's, not the stream's). */
void tunnel_stream_frame(struct tunnel_stream *st, const struct tunnel_frame *f, uint64_t now_ms);

/* Send what may be sent now (after send returned false and MQTT drained). */
void tunnel_stream_pump(struct tunnel_stream *st, uint64_t now_ms);
/* A new MQTT connection: everything unacknowledged (data, FIN) and the
 * current ACK go again. */
void tunnel_stream_resend(struct tunnel_stream *st, uint64_t now_ms);
/* Timers (delayed ACK, retransmission, give-up): call at or after the time
 * it returns (0: nothing pending). */
uint64_t tunnel_stream_poll(struct tunnel_stream *st, uint64_t now_ms);

/* Both directions finished: the runtime frees it (after closing TCP). */
bool tunnel_stream_done(const struct tunnel_stream *st);
/* Reset (by either side): nothing more happens; the runtime frees it. */
bool tunnel_stream_reset(const struct tunnel_stream *st);
void tunnel_stream_get_stats(const struct tunnel_stream *st, struct tunnel_stream_stats *out);
/* Added: no frame of ours waits to go (an RST, an ACK due now or delayed).
 * A done or reset stream that is not flushed still owes the peer its final
 * ACK or its RST: the runtime may pump it once more before freeing it. */
bool tunnel_stream_flushed(const struct tunnel_stream *st);

#endif
