#!/usr/bin/python3
"""A small PNG line plot in pure Python (zlib + struct): no matplotlib needed.

    plot.py samples.csv out.png [title [warm-up seconds]]

draws panels from the soak test's CSV (columns t_s, rss_kib, rss_anon_kib, fds, ...): RSS in
MiB, its anonymous part (when the CSV has it) and open descriptors over time, each with its own
y range, labelled with a 5x7 bitmap font. The soak test imports render() directly; the command
line is for a CSV kept from an earlier run.
"""
import csv
import struct
import sys
import zlib

# 5x7 glyphs, one row per string of five '#'/'.', for what the labels use.
_FONT_SRC = {
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#....#####", "3": "#####...#...#.....#....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "#####.....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    ".": "..........................##...##..", "-": "...............###...............",
    ":": ".....##...##........##...##.......", " ": "." * 35, "/": "....#...#...#...#...#...#........",
    "(": "...#...#...#....#....#.....#.....#.", ")": ".#.....#.....#....#....#...#...#...",
    "=": "..........#####.....#####..........", "%": "##...##..#...#...#...#...#..##...##",
    ",": ".....................##...##...#...", "_": "." * 30 + "#####",
}
_LETTERS = {
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "####.#...##...##...##...##...#####.",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "K": "#...##..#.#.#..##...#.#..#..#.#...#",
    "L": "#....#....#....#....#....#....#####", "M": "#...###.###.#.##...##...##...##...#",
    "N": "#...###..##.#.##..###...##...##...#", "O": ".###.#...##...##...##...##...#.###.",
    "P": "####.#...##...#####.#....#....#....", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    "J": "..###...#....#....#....#.#..#..##..", "Q": ".###.#...##...##...##.#.##..#..##.#",
}
FONT = {}
for _c, _bits in {**_FONT_SRC, **_LETTERS}.items():
    if _bits:
        FONT[_c] = [_bits[r * 5:(r + 1) * 5] for r in range(7)]

WHITE, BLACK, GREY, BLUE, RED = (255, 255, 255), (0, 0, 0), (200, 200, 200), (30, 80, 200), (200, 40, 40)


class Canvas:
    def __init__(self, w, h):
        self.w, self.h = w, h
        self.px = bytearray(WHITE * (w * h))

    def dot(self, x, y, rgb):
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            self.px[i:i + 3] = bytes(rgb)

    def line(self, x0, y0, x1, y1, rgb):
        """Bresenham, integer end points."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.dot(x0, y0, rgb)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x, y, s, rgb=BLACK):
        for ch in s.upper():
            glyph = FONT.get(ch, FONT["."])
            for r, row in enumerate(glyph):
                for c, bit in enumerate(row):
                    if bit == "#":
                        self.dot(x + c, y + r, rgb)
            x += 6

    def png(self):
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(kind, data):
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _fmt(v):
    return f"{v:.1f}" if abs(v) < 1000 and v != int(v) else str(int(round(v)))


def nice_step(raw):
    """The smallest 1, 2 or 5 times a power of ten that is at least raw."""
    mag = 1.0
    while mag * 10 <= raw:
        mag *= 10
    while mag > raw and mag > 1e-9:
        mag /= 10
    for m in (1, 2, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def panel(cv, top, height, xs, ys, label, rgb, x_max, mark_x=None):
    """One framed plot of ys over xs at rows top..top+height, y range padded from the data."""
    left, right = 70, cv.w - 20
    lo, hi = min(ys), max(ys)
    pad = max((hi - lo) * 0.1, abs(hi) * 0.02, 1.0)
    lo, hi = lo - pad, hi + pad
    bottom = top + height
    for gy in range(5):  # horizontal grid with y labels
        v = lo + (hi - lo) * gy / 4
        y = bottom - int((v - lo) / (hi - lo) * height)
        cv.line(left, y, right, y, GREY)
        cv.text(4, y - 3, _fmt(v))
    step = nice_step(x_max / 8)
    v = 0.0
    while v <= x_max:  # vertical grid with time labels at round values
        x = left + int(v / x_max * (right - left))
        cv.line(x, top, x, bottom, GREY)
        cv.text(x - 6, bottom + 4, f"{int(v)}")
        v += step
    if mark_x is not None:  # the end of the warm-up
        x = left + int(mark_x / x_max * (right - left))
        for y in range(top, bottom, 4):
            cv.line(x, y, x, y + 1, RED)
    cv.line(left, top, right, top, BLACK)
    cv.line(left, bottom, right, bottom, BLACK)
    cv.line(left, top, left, bottom, BLACK)
    cv.line(right, top, right, bottom, BLACK)
    pts = [(left + int(x / x_max * (right - left)), bottom - int((y - lo) / (hi - lo) * height))
           for x, y in zip(xs, ys)]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        cv.line(x0, y0, x1, y1, rgb)
        cv.line(x0, y0 + 1, x1, y1 + 1, rgb)
    cv.text(left + 6, top + 6, label, rgb)


def render(rows, title="", warm_up=None, width=900):
    """PNG bytes: RSS (MiB), its anonymous part, open descriptors. rows: dicts with t_s, rss_kib,
    fds and maybe rss_anon_kib."""
    xs = [float(r["t_s"]) for r in rows]
    series = [("RSS MIB", BLUE, [float(r["rss_kib"]) / 1024 for r in rows])]
    if rows and rows[0].get("rss_anon_kib") not in (None, ""):
        series.append(("OF WHICH ANONYMOUS (HEAP, STACKS) MIB", (120, 60, 160),
                       [float(r["rss_anon_kib"]) / 1024 for r in rows]))
    series.append(("OPEN FDS", (0, 130, 60), [float(r["fds"]) for r in rows]))
    cv = Canvas(width, 40 + 240 * len(series))
    cv.text(70, 6, title)
    x_max = max(xs[-1], 1.0)
    for k, (label, rgb, ys) in enumerate(series):
        panel(cv, 24 + 240 * k, 190, xs, ys, label, rgb, x_max, warm_up)
    cv.text(70, cv.h - 14, "X: SECONDS SINCE THE LOAD STARTED.  RED DASHES: END OF THE WARM-UP")
    return cv.png()


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        rows = list(csv.DictReader(f))
    with open(sys.argv[2], "wb") as f:
        f.write(render(rows, sys.argv[3] if len(sys.argv) > 3 else "",
                       float(sys.argv[4]) if len(sys.argv) > 4 else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
