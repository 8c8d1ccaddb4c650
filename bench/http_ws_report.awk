# bench/http_ws_report.awk: the Markdown table of bench/http_ws.sh from its
# results.tsv.  Run after stats.awk (awk -f stats.awk -f http_ws_report.awk),
# with -v variants="N1 SIZE1 N2 SIZE2 ..." (WebSockets and message bytes).

# One row per variant; label is a format taking the WebSockets and the size.
function each(prefix, label,    i) {
    for (i = 1; i <= nv; i += 2)
        row(prefix "_" vs[i] "_" vs[i + 1], sprintf(label, vs[i], vs[i + 1]))
}

END {
    paths["haproxy"]; paths["mgate"]
    derive_added("p50")
    derive_added("p99")
    nv = split(variants, vs, " ")
    print "| metric | direct | HAProxy | mgate | mgate / HAProxy | mgate / direct |"
    print "|---|---|---|---|---|---|"
    each("thr", "throughput, %s WS × %s B (msg/s echoed)")
    each("cpu", "proxy CPU-µs per message, %s WS × %s B")
    each("sys", "share of proxy CPU in the kernel, %s WS × %s B (%%)")
    each("busy", "proxy CPU busy, %s WS × %s B (%% of one CPU)")
    each("ecpu", "echo target CPU-µs per message, %s WS × %s B")
    each("lcpu", "load generator CPU-µs per message, %s WS × %s B")
    row("lat_p50", "round trip p50 at 1000 msg/s, 64 B (µs)")
    row("lat_p99", "round trip p99 at 1000 msg/s, 64 B (µs)")
    row("lat_add_p50", "added p50 vs direct (µs)")
    row("lat_add_p99", "added p99 vs direct (µs)")
    row("idle_kib", "RSS per idle WebSocket, fresh (KiB)")
    row("idle_msg_kib", "RSS per idle WebSocket after one echo (KiB)")
    row("idle_after", "RSS left after they close, over the start (KiB)")
}
