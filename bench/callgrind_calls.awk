# bench/callgrind_calls.awk: how many times each function was called in a
# callgrind output file (all callers summed).  Prints "count<TAB>function".
# Names may be compressed: "(12) name" the first time, "(12)" afterwards.
function fn_id(s,    id, rest) {
    if (!match(s, /^\([0-9]+\)/)) {
        name[s] = s
        return s
    }
    id = substr(s, 1, RLENGTH)
    rest = substr(s, RLENGTH + 2)
    if (rest != "") name[id] = rest
    return id
}
/^cfn=/ { cur = fn_id(substr($0, 5)); next }
/^fn=/ { fn_id(substr($0, 4)); next }
/^calls=/ { split(substr($0, 7), a, " "); calls[cur] += a[1] }
END {
    for (c in calls) total[name[c]] += calls[c]
    for (f in total) printf "%d\t%s\n", total[f], f
}
