# bench/callgrind_top.awk: the functions of a callgrind_annotate listing that
# cost the most per message, with the run with no messages subtracted.
#   awk -v n=MESSAGES -v k=ROWS -f callgrind_top.awk base.txt run.txt
# Prints Markdown rows: | Ir per message | share of the per-message total | function |
function parse(line,    ir, f) {
    if (!match(line, /^ *[0-9,]+ \( *[0-9.]+%\)  /)) return ""
    f = substr(line, RLENGTH + 1)
    if (f ~ /PROGRAM TOTALS/) return ""
    ir = line; sub(/\(.*/, "", ir); gsub(/[ ,]/, "", ir)
    sub(/ \[.*\]$/, "", f)  # the object file
    sub(/^.*\//, "", f)     # the source path, keeping the file name
    cost = ir
    return f
}
/PROGRAM TOTALS/ { t = $1; gsub(/,/, "", t); total[FILENAME == ARGV[1]] = t; next }
{
    f = parse($0)
    if (f == "") next
    if (FILENAME == ARGV[1]) base[f] = cost
    else run[f] = cost
}
END {
    per = (total[0] - total[1]) / n
    for (f in run) {
        d = (run[f] - base[f]) / n
        if (d > 0) rows[f] = d
    }
    for (i = 1; i <= k; i++) {
        best = ""
        for (f in rows) if (best == "" || rows[f] > rows[best]) best = f
        if (best == "") break
        printf "| %.1f | %.1f%% | `%s` |\n", rows[best], 100 * rows[best] / per, best
        delete rows[best]
    }
}
