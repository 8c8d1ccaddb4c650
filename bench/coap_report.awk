# bench/coap_report.awk: the Markdown table of bench/coap.sh from its
# results.tsv.  Run after stats.awk (awk -f stats.awk -f coap_report.awk),
# with -v loads="con non".

function row2(m, label) {
    if (!(m in seen)) return
    printf "| %s | %s | %s | %s |\n", label, cell(m, "direct"), cell(m, "mgate"), ratio(pratio(m, "mgate", "direct"))
}

END {
    nl = split(loads, ls, " ")
    print "| metric | direct | through mgate | mgate / direct |"
    print "|---|---|---|---|"
    for (i = 1; i <= nl; i++) {
        t = toupper(ls[i])
        row2("thr_" ls[i], "**requests/s, " t "**")
        row2("cpu_" ls[i], "**mgate CPU-µs per request, " t "**")
        row2("scpu_" ls[i], "server CPU-µs per request, " t)
        row2("lcpu_" ls[i], "load generator CPU-µs per request, " t)
        row2("p50_" ls[i], "latency p50 (µs), " t)
        row2("p99_" ls[i], "latency p99 (µs), " t)
    }
    row2("idle_kib", "**RSS per idle CoAP session (KiB)** (direct: the server's)")
    row2("idle_fds", "descriptors per idle CoAP session")
}
