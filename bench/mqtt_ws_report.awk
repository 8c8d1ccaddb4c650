# bench/mqtt_ws_report.awk: the Markdown tables of bench/mqtt_ws.sh from its
# results.tsv.  Run after stats.awk (awk -f stats.awk -f mqtt_ws_report.awk),
# with -v transports="ws wss" -v loads="QOS1 SIZE1 QOS2 SIZE2 ...".

# One row per transport and load; label is a format taking the transport, QoS and size.
function each(prefix, label,    i, j) {
    for (j = 1; j <= nt; j++)
        for (i = 1; i <= nl; i += 2)
            row(prefix "_" ts[j] "_q" ls[i] "_" ls[i + 1], sprintf(label, ts[j], ls[i], ls[i + 1]))
}

# The largest ratio mgate/HAProxy (each the median of the per-round ratios)
# over every load of a transport; judged as printed, to two decimals.
function worst_cpu(t,    i, x, w) {
    w = ""
    for (i = 1; i <= nl; i += 2) {
        x = pratio("cpu_" t "_q" ls[i] "_" ls[i + 1], "mgate", "haproxy")
        if (x != "" && (w == "" || x > w)) w = x
    }
    return w
}

END {
    nt = split(transports, ts, " ")
    nl = split(loads, ls, " ")
    print "| metric | direct | HAProxy | mgate | mgate / HAProxy | mgate / direct |"
    print "|---|---|---|---|---|---|"
    each("cpu", "**proxy CPU-s per 1M msgs, %s://, QoS %s, %s B**")
    each("thr", "msg/s, %s://, QoS %s, %s B")
    each("sys", "share of proxy CPU in the kernel, %s://, QoS %s, %s B (%%)")
    each("bcpu", "broker CPU-s per 1M msgs, %s://, QoS %s, %s B")
    each("lcpu", "load generator CPU-s per 1M msgs, %s://, QoS %s, %s B")
    row("idle_ws_kib", "**RSS per idle ws:// pair (KiB)**")
    row("idle_wss_kib", "**RSS per idle wss:// pair (KiB)**")
    row("idle_wstcp_kib", "RSS per idle ws:// pair, mgate TARGET_PROTOCOL=mqtt (KiB)")
    row("idle_mqtt_kib", "RSS per idle mqtt:// pair, TCP both sides (KiB)")
    row("idle_mqtts_kib", "RSS per idle mqtts:// pair, TCP to the broker (KiB)")
    row("fds_ws", "descriptors per ws:// client")
    row("fds_wss", "**descriptors per wss:// client**")

    # issue 15's targets
    print ""
    print "| issue 15 target | measured | |"
    print "|---|---|---|"
    for (j = 1; j <= nt; j++) {
        w = worst_cpu(ts[j])
        if (w != "")
            printf "| proxy CPU per message on %s:// ≤ 1.0 × HAProxy (every load) | worst %.2f × | %s |\n", ts[j], w, verdict(sprintf("%.2f", w) + 0 <= 1.0)
    }
    if (median("idle_ws_kib", "mgate") != "") {
        x = median("idle_ws_kib", "mgate")
        printf "| idle ws:// pair ≤ 1.0 KiB (TARGET_PROTOCOL=ws) | %.2f KiB | %s |\n", x, verdict(x <= 1.0)
    }
    if (median("idle_wstcp_kib", "mgate") != "") {
        x = median("idle_wstcp_kib", "mgate")
        printf "| idle ws:// pair ≤ 1.0 KiB (TARGET_PROTOCOL=mqtt) | %.2f KiB | %s |\n", x, verdict(x <= 1.0)
    }
    if (median("idle_wss_kib", "mgate") != "" && median("idle_mqtts_kib", "mgate") != "" && median("idle_mqtt_kib", "mgate") != "") {
        x = median("idle_wss_kib", "mgate")
        tls = median("idle_mqtts_kib", "mgate") - median("idle_mqtt_kib", "mgate")
        printf "| idle wss:// pair ≤ 1.5 KiB + OpenSSL's state | %.2f KiB = %.2f (TLS: mqtts:// pair − mqtt:// pair) + %.2f | %s |\n", x, tls, x - tls, verdict(x - tls <= 1.5)
    }
    if (median("fds_wss", "mgate") != "") {
        x = median("fds_wss", "mgate")
        printf "| 2 descriptors per wss:// client | %.2f | %s |\n", x, verdict(x <= 2.0)
    }
}
