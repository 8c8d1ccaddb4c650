# bench/coap_report.awk: the Markdown table of bench/coap.sh from its
# results.tsv.  Run after stats.awk (awk -f stats.awk -f coap_report.awk),
# with -v loads="con non".  Paths: direct, mgate (the relay), bridge0 and
# bridge1 (the bridge at QoS 0 and 1; their "server" is mosquitto).

function row4(m, label) {
    if (!(m in seen)) return
    printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", label, cell(m, "direct"), cell(m, "mgate"),
        cell(m, "bridge0"), cell(m, "bridge1"), ratio(pratio(m, "mgate", "direct")),
        ratio(pratio(m, "bridge0", "direct")), ratio(pratio(m, "bridge1", "direct"))
}

END {
    nl = split(loads, ls, " ")
    print "| metric | direct | relay | bridge QoS 0 | bridge QoS 1 | relay / direct | bridge 0 / direct | bridge 1 / direct |"
    print "|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nl; i++) {
        t = toupper(ls[i])
        row4("thr_" ls[i], "**requests/s, " t "**")
        row4("cpu_" ls[i], "**mgate CPU-µs per request, " t "**")
        row4("scpu_" ls[i], "server CPU-µs per request, " t " (bridge: mosquitto)")
        row4("lcpu_" ls[i], "load generator CPU-µs per request, " t)
        row4("p50_" ls[i], "latency p50 (µs), " t)
        row4("p99_" ls[i], "latency p99 (µs), " t)
    }
    row4("idle_kib", "**RSS per idle CoAP session (KiB)** (direct: the server's)")
    row4("idle_kib_broker", "mosquitto RSS per idle bridged session (KiB)")
    row4("idle_fds", "descriptors per idle CoAP session")
}
