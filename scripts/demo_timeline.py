"""Draw record-countd's access log as a timeline (hand-written SVG, standard library only).

Each request to record-countd is a bar from its arrival to its response, labelled with the value(s)
it recorded; one lane per strategy; bars that overlap in time are stacked, so concurrency is seen
as height. Used by scripts/demo.py.
"""
import math
import re
from xml.sax.saxutils import escape

# record-countd: access method=GET path=/record-count status=200 client=ID values=3 start=S end=E
ACCESS_RE = re.compile(r"record-countd: access method=(?P<method>\S+) path=(?P<path>\S+) status=(?P<status>\d+) "
                       r"client=(?P<client>\S+) values=(?P<values>\S+) start=(?P<start>[0-9.]+) end=(?P<end>[0-9.]+)")

COLORS = {"locked": "#2e7d32", "stateless": "#1565c0", "unsafe": "#c62828"}
FONT = "DejaVu Sans, Verdana, Arial, sans-serif"


class Bar:
    """One request: client, values recorded, arrival and response times (seconds since the epoch)."""

    def __init__(self, method, client, values, start, end, status):
        self.method = method
        self.client = client
        self.values = values
        self.start = start
        self.end = end
        self.status = status

    @property
    def label(self):
        v = self.values
        if not v:
            return "-"
        if len(v) == 1:
            return str(v[0])
        if v == list(range(v[0], v[0] + len(v))):
            return "%d-%d" % (v[0], v[-1])
        return ",".join(str(x) for x in v[:3]) + ("..." if len(v) > 3 else "")


class Lane:
    """The bars of one run, with its title, strategy (for the colour), a note and its panel."""

    def __init__(self, title, strategy, bars, note="", group=0, note_color=None):
        self.note_color = note_color
        self.title = title
        self.strategy = strategy
        self.bars = sorted(bars, key=lambda b: (b.start, b.end))
        self.note = note
        self.group = group


def parse_access_log(lines):
    """Bars for every /record-count request in record-countd's access log lines (others are ignored)."""
    bars = []
    for line in lines:
        m = ACCESS_RE.search(line)
        if not m or m.group("path") != "/record-count":
            continue
        vals = [] if m.group("values") == "-" else [int(x) for x in m.group("values").split(",")]
        bars.append(Bar(m.group("method"), m.group("client"), vals, float(m.group("start")),
                        float(m.group("end")), int(m.group("status"))))
    return bars


def stack(bars):
    """Give each bar the lowest row where it does not overlap an earlier bar; returns the row count."""
    row_ends = []
    for b in bars:
        for i, end in enumerate(row_ends):
            if b.start >= end:
                b.row = i
                row_ends[i] = b.end
                break
        else:
            b.row = len(row_ends)
            row_ends.append(b.end)
    return max(1, len(row_ends))


def nice_step(span, want=8):
    """A tick step of 1, 2 or 5 times a power of ten giving about `want` ticks over span."""
    raw = span / want
    p = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * p >= raw:
            return m * p
    return 10 * p


def text_width(s, size):
    return len(s) * size * 0.6


def render(lanes, title, groups, width=1000):
    """The whole picture as SVG text: one panel per group, each with its own time axis in ms."""
    left, right = 200, 24
    plot_w = width - left - right
    row_h, row_gap = 20, 4
    out = []
    y = 76
    body = []
    for gi, gname in enumerate(groups):
        glanes = [l for l in lanes if l.group == gi]
        if not glanes:
            continue
        # Each lane's time starts at its first request; the panel shares one scale.
        span = 0.0
        for l in glanes:
            if l.bars:
                t0 = l.bars[0].start
                span = max(span, max(b.end for b in l.bars) - t0)
        span_ms = max(span * 1000.0, 1.0)
        step = nice_step(span_ms)
        span_ms = math.ceil(span_ms / step) * step
        x_of = lambda ms: left + plot_w * ms / span_ms

        body.append('<text x="12" y="%d" class="panel">%s</text>' % (y, escape(gname)))
        y += 14
        top = y
        lane_blocks = []
        for l in glanes:
            rows = stack(l.bars)
            # Labels that do not fit inside their bar go above it; leave room for them.
            outside = any(text_width(b.label, 11) + 6 > plot_w * (b.end - b.start) * 1000.0 / span_ms for b in l.bars)
            # Narrow bars alternate between two label lines so neighbours do not collide.
            label_h = 28 if outside else 0
            h = label_h + rows * (row_h + row_gap) + 18
            lane_blocks.append((l, y, rows, label_h, h))
            y += h + 10
        bottom = y - 10
        # Grid and axis.
        t = 0.0
        while t <= span_ms + 1e-9:
            x = x_of(t)
            body.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" class="grid"/>' % (x, top, x, bottom))
            body.append('<text x="%.1f" y="%d" class="tick">%s</text>' % (x, bottom + 14, "%g ms" % t))
            t += step
        y = bottom + 30
        for l, ly, rows, label_h, h in lane_blocks:
            color = COLORS.get(l.strategy, "#555")
            body.append('<rect x="6" y="%d" width="%d" height="%d" class="lane"/>' % (ly - 4, width - 12, h))
            body.append('<text x="14" y="%d" class="lanetitle" fill="%s">%s</text>' % (ly + 14, color, escape(l.title)))
            body.append('<text x="14" y="%d" class="small">%d request%s, %d at once at most</text>'
                        % (ly + 30, len(l.bars), "" if len(l.bars) == 1 else "s", rows))
            if l.bars:
                t0 = l.bars[0].start
                for i, b in enumerate(l.bars):
                    x1 = x_of((b.start - t0) * 1000.0)
                    x2 = max(x_of((b.end - t0) * 1000.0), x1 + 2)
                    by = ly + label_h + b.row * (row_h + row_gap)
                    tip = "%s %s values=%s %.1f ms status %d" % (b.method, b.client, b.label,
                                                               (b.end - b.start) * 1000.0, b.status)
                    fill = color if b.status == 200 else "#888"
                    body.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" rx="3" fill="%s" class="bar">'
                                '<title>%s</title></rect>' % (x1, by, x2 - x1, row_h, fill, escape(tip)))
                    if text_width(b.label, 11) + 6 <= x2 - x1:
                        body.append('<text x="%.1f" y="%d" class="inbar">%s</text>'
                                    % ((x1 + x2) / 2, by + 14, escape(b.label)))
                    else:
                        body.append('<text x="%.1f" y="%d" class="above" fill="%s">%s</text>'
                                    % ((x1 + x2) / 2, by - 3 - 14 * (i % 2), color, escape(b.label)))
            body.append('<text x="%d" y="%d" class="note"%s>%s</text>'
                        % (left, ly + h - 8, ' fill="%s"' % l.note_color if l.note_color else "", escape(l.note)))
    height = y + 8
    out.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d">'
               % (width, height, width, height))
    out.append("<style>"
               "text{font-family:%s;fill:#222}"
               ".title{font-size:17px;font-weight:bold}"
               ".sub{font-size:12px;fill:#555}"
               ".panel{font-size:14px;font-weight:bold}"
               ".lanetitle{font-size:13px;font-weight:bold}"
               ".small{font-size:11px;fill:#555}"
               ".note{font-size:11px;fill:#333}"
               ".tick{font-size:10px;fill:#777;text-anchor:middle}"
               ".grid{stroke:#e4e4e4;stroke-width:1}"
               ".lane{fill:#fafafa;stroke:#e0e0e0}"
               ".inbar{font-size:11px;fill:#fff;text-anchor:middle;font-weight:bold}"
               ".above{font-size:11px;text-anchor:middle}"
               ".bar{fill-opacity:0.9}"
               "</style>" % FONT)
    out.append('<rect width="100%" height="100%" fill="#fff"/>')
    out.append('<text x="12" y="24" class="title">%s</text>' % escape(title))
    out.append('<text x="12" y="42" class="sub">Each bar is one request to record-countd, from its arrival to its '
               'response, labelled with the value(s) it recorded; overlapping requests are stacked.</text>')
    out.extend(body)
    out.append("</svg>")
    return "\n".join(out) + "\n"
