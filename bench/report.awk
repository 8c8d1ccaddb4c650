# bench/report.awk: turns results.tsv (metric, path, round, value) into the
# Markdown tables of bench/run.sh.  -v workers=1 adds the 1 vs 2 workers table.
# Run after stats.awk (awk -f stats.awk -f report.awk), which reads the rows.

# One row per QoS and payload size; label is a format taking both.
function variants(prefix, label,    i, qs) {
    for (i = 1; i <= 4; i++) {
        split(vs[i], qs, " ")
        row(prefix "_q" qs[1] "_" qs[2], sprintf(label, qs[1], qs[2]))
    }
}

function target_added(q,    h, g) {
    h = median("lat_add_" q, "haproxy"); g = median("lat_add_" q, "mgate")
    if (h != "" && g != "")
        printf "- added %s ≤ HAProxy's: %s µs vs %s µs → %s\n", q, fmt(g), fmt(h), verdict(g <= h)
}

END {
    paths["haproxy"]; paths["mgate"]
    derive_added("p50")
    derive_added("p99")
    print "| metric | direct | haproxy | mgate | mgate/haproxy | mgate/direct |"
    print "|---|---|---|---|---|---|"
    split("0 64,0 1024,1 64,1 1024", vs, ",")
    variants("thr", "throughput QoS %s, %s B (msg/s received)")
    variants("cpu", "proxy CPU-s per 1M msgs, QoS %s %s B")
    variants("sys", "share of proxy CPU in the kernel, QoS %s %s B (%%)")
    variants("bcpu", "broker CPU-s per 1M msgs, QoS %s %s B")
    variants("lcpu", "load generator CPU-s per 1M msgs, QoS %s %s B")
    row("lat_p50", "latency p50 at 1000 msg/s (µs)")
    row("lat_p99", "latency p99 at 1000 msg/s (µs)")
    row("lat_add_p50", "added latency p50 vs direct (µs)")
    row("lat_add_p99", "added latency p99 vs direct (µs)")
    row("idle_kib", "RSS per idle connection (KiB; direct: the broker's)")
    row("idle_after", "RSS left after they close, over the start (KiB)")
    row("connrate", "new connections/s")
    row("cr_cpu", "proxy CPU-µs per new connection")

    if (workers) {
        print ""
        print "mgate with 1 and 2 workers (MGATE_WORKERS):"
        print ""
        print "| metric | 1 worker | 2 workers | 2/1 |"
        print "|---|---|---|---|"
        for (i = 1; i <= 2; i++) {
            split(vs[i], qs, " ")
            m = "thr_q" qs[1] "_" qs[2]
            printf "| throughput QoS %s, %s B (msg/s) | %s | %s | %s |\n", qs[1], qs[2], cell(m, "mgate1"),
                cell(m, "mgate2"), ratio(pratio(m, "mgate2", "mgate1"))
            m = "cpu_q" qs[1] "_" qs[2]
            printf "| CPU-s per 1M msgs, QoS %s %s B | %s | %s | %s |\n", qs[1], qs[2], cell(m, "mgate1"),
                cell(m, "mgate2"), ratio(pratio(m, "mgate2", "mgate1"))
        }
    }

    print ""
    print "Targets (issue 7), on the ratios and medians above:"
    print ""
    x = pratio("cpu_q0_64", "mgate", "haproxy")
    if (x != "")
        printf "- CPU per message ≤ 1.0 × HAProxy's (QoS 0 64 B): %s × → %s\n", ratio(x), verdict(x <= 1)
    g = median("idle_kib", "mgate")
    if (g != "")
        printf "- ≤ 1 KiB per idle connection: %s KiB → %s\n", fmt(g), verdict(g <= 1)
    target_added("p50")
    target_added("p99")
    x = pratio("connrate", "mgate", "haproxy")
    if (x != "")
        printf "- connections/s ≥ HAProxy's: %s × → %s\n", ratio(x), verdict(x >= 1)
    for (i = 1; i <= 4; i++) {
        split(vs[i], qs, " ")
        x = pratio("thr_q" qs[1] "_" qs[2], "mgate", "direct")
        if (x != "")
            printf "- throughput ≥ 0.95 × direct, QoS %s %s B: %s × → %s\n", qs[1], qs[2], ratio(x), verdict(x >= 0.95)
    }
}
