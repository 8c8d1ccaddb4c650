# bench/stats.awk: reads results.tsv (metric, path, round, value) and gives
# the report scripts (report.awk, http_ws_report.awk) their cells and ratios.
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

# lat_add_pNN: a path's latency percentile minus direct's in the same round.
function derive_added(q,    r, p) {
    for (r = 1; r <= maxr; r++)
        for (p in paths) # paths: the proxies, set by the caller
            if (("lat_" q, p, r) in val && ("lat_" q, "direct", r) in val) {
                val["lat_add_" q, p, r] = val["lat_" q, p, r] - val["lat_" q, "direct", r]
                seen["lat_add_" q] = 1
            }
}

function verdict(ok) { return ok ? "**met**" : "**not met**" }

{
    val[$1, $2, $3] = $4 + 0
    seen[$1] = 1
    if ($3 > maxr) maxr = $3
}
