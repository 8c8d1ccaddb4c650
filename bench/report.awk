# bench/report.awk: turns results.tsv (metric, path, round, value) into the
# Markdown tables of bench/run.sh.  -v workers=1 adds the 1 vs 2 workers table.

function fmt(x, a) {
    if (x == "") return "—"
    a = x < 0 ? -x : x
    if (a >= 100) return sprintf("%.0f", x)
    if (a >= 10) return sprintf("%.1f", x)
    return sprintf("%.2f", x)
}

function stats(m, p,    k, n, i, j, t, v) {
    k = m SUBSEP p
    n = cnt[k]
    med = lo = hi = ""
    if (!n) return 0
    for (i = 1; i <= n; i++) v[i] = val[k, i]
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    lo = v[1]; hi = v[n]
    med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    return n
}

function cell(m, p) {
    if (!stats(m, p)) return "—"
    if (cnt[m SUBSEP p] == 1) return fmt(med)
    return fmt(med) " (" fmt(lo) "–" fmt(hi) ")"
}

function median(m, p) { return stats(m, p) ? med : "" }

function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "—" : sprintf("%.2f", a / b) }

function row(m, label,    d, h, g) {
    if (!(m SUBSEP "direct" in cnt) && !(m SUBSEP "haproxy" in cnt) && !(m SUBSEP "mgate" in cnt)) return
    d = median(m, "direct"); h = median(m, "haproxy"); g = median(m, "mgate")
    printf "| %s | %s | %s | %s | %s | %s |\n", label, cell(m, "direct"), cell(m, "haproxy"),
        cell(m, "mgate"), ratio(g, h), ratio(g, d)
}

# One row per QoS and payload size; label is a format taking both.
function variants(prefix, label,    i, qs) {
    for (i = 1; i <= 4; i++) {
        split(vs[i], qs, " ")
        row(prefix "_q" qs[1] "_" qs[2], sprintf(label, qs[1], qs[2]))
    }
}

function verdict(ok) { return ok ? "**met**" : "**not met**" }

{
    k = $1 SUBSEP $2
    val[k, ++cnt[k]] = $4 + 0
}

END {
    print "| metric | direct | haproxy | mgate | mgate/haproxy | mgate/direct |"
    print "|---|---|---|---|---|---|"
    split("0 64,0 1024,1 64,1 1024", vs, ",")
    variants("thr", "throughput QoS %s, %s B (msg/s received)")
    variants("cpu", "proxy CPU-s per 1M msgs, QoS %s %s B")
    variants("sys", "share of proxy CPU in the kernel, QoS %s %s B (%%)")
    variants("bcpu", "broker CPU-s per 1M msgs, QoS %s %s B")
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
                cell(m, "mgate2"), ratio(median(m, "mgate2"), median(m, "mgate1"))
            m = "cpu_q" qs[1] "_" qs[2]
            printf "| CPU-s per 1M msgs, QoS %s %s B | %s | %s | %s |\n", qs[1], qs[2], cell(m, "mgate1"),
                cell(m, "mgate2"), ratio(median(m, "mgate2"), median(m, "mgate1"))
        }
    }

    print ""
    print "Targets (issue 7), on the medians above:"
    print ""
    h = median("cpu_q0_64", "haproxy"); g = median("cpu_q0_64", "mgate")
    if (h != "" && g != "")
        printf "- CPU per message ≤ 1.0 × HAProxy's (QoS 0 64 B): %s × → %s\n", ratio(g, h), verdict(g <= h)
    g = median("idle_kib", "mgate")
    if (g != "")
        printf "- ≤ 1 KiB per idle connection: %s KiB → %s\n", fmt(g), verdict(g <= 1)
    h = median("lat_add_p50", "haproxy"); g = median("lat_add_p50", "mgate")
    if (h != "" && g != "")
        printf "- added p50 ≤ HAProxy's: %s µs vs %s µs → %s\n", fmt(g), fmt(h), verdict(g <= h)
    h = median("lat_add_p99", "haproxy"); g = median("lat_add_p99", "mgate")
    if (h != "" && g != "")
        printf "- added p99 ≤ HAProxy's: %s µs vs %s µs → %s\n", fmt(g), fmt(h), verdict(g <= h)
    h = median("connrate", "haproxy"); g = median("connrate", "mgate")
    if (h != "" && g != "")
        printf "- connections/s ≥ HAProxy's: %s vs %s → %s\n", fmt(g), fmt(h), verdict(g >= h)
    for (i = 1; i <= 4; i++) {
        split(vs[i], qs, " ")
        m = "thr_q" qs[1] "_" qs[2]
        d = median(m, "direct"); g = median(m, "mgate")
        if (d != "" && g != "")
            printf "- throughput ≥ 0.95 × direct, QoS %s %s B: %s × → %s\n", qs[1], qs[2], ratio(g, d),
                verdict(g >= 0.95 * d)
    }
}
