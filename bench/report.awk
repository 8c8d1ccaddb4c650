# bench/report.awk: turns results.tsv (metric, path, round, value) into the
# Markdown tables of bench/run.sh.  -v workers=1 adds the 1 vs 2 workers table.
#
# A cell is the median over rounds (min-max).  A ratio is the median of the
# ratios within each round: the paths of one round ran minutes apart at most,
# so this cancels most of the drift of a shared machine between rounds.
# Added latency is likewise the path's percentile minus direct's, per round.

function fmt(x, a) {
    if (x == "") return "—"
    a = x < 0 ? -x : x
    if (a >= 100) return sprintf("%.0f", x)
    if (a >= 10) return sprintf("%.1f", x)
    return sprintf("%.2f", x)
}

# Median, min and max of the values in v[1..n] (sorted in place) into med, lo, hi.
function summarise(v, n,    i, j, t) {
    med = lo = hi = ""
    if (!n) return 0
    for (i = 2; i <= n; i++)
        for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    lo = v[1]; hi = v[n]
    med = n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    return n
}

function stats(m, p,    n, r, v) {
    n = 0
    for (r = 1; r <= maxr; r++)
        if ((m, p, r) in val) v[++n] = val[m, p, r]
    return summarise(v, n)
}

# Median over rounds of val(m, a) / val(m, b) within a round.
function pratio(m, a, b,    n, r, v) {
    n = 0
    for (r = 1; r <= maxr; r++)
        if ((m, a, r) in val && (m, b, r) in val && val[m, b, r] != 0) v[++n] = val[m, a, r] / val[m, b, r]
    return summarise(v, n) ? med : ""
}

function cell(m, p,    n) {
    if (!(n = stats(m, p))) return "—"
    if (n == 1) return fmt(med)
    return fmt(med) " (" fmt(lo) "–" fmt(hi) ")"
}

function median(m, p) { return stats(m, p) ? med : "" }

function ratio(x) { return x == "" ? "—" : sprintf("%.2f", x) }

function row(m, label) {
    if (!(m in seen)) return
    printf "| %s | %s | %s | %s | %s | %s |\n", label, cell(m, "direct"), cell(m, "haproxy"),
        cell(m, "mgate"), ratio(pratio(m, "mgate", "haproxy")), ratio(pratio(m, "mgate", "direct"))
}

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

function verdict(ok) { return ok ? "**met**" : "**not met**" }

{
    val[$1, $2, $3] = $4 + 0
    seen[$1] = 1
    if ($3 > maxr) maxr = $3
}

# lat_add_pNN: a path's latency percentile minus direct's in the same round.
function derive_added(q,    r, p) {
    for (r = 1; r <= maxr; r++)
        for (p in paths)
            if (("lat_" q, p, r) in val && ("lat_" q, "direct", r) in val) {
                val["lat_add_" q, p, r] = val["lat_" q, p, r] - val["lat_" q, "direct", r]
                seen["lat_add_" q] = 1
            }
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
