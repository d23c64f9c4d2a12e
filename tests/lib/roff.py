"""A reader of the few roff macros lockstep's man pages use (.SH, .TP/.TQ, .nf/.fi, the font macros), so that the
documentation tests need neither man(1) nor groff."""
import os
import re


def unescape(s):
    """Text with roff's font changes and the escapes the man pages use replaced by what they print."""
    s = re.sub(r"\\f[BIRP]", "", s)
    return (s.replace("\\-", "-").replace("\\(aq", "'").replace("\\(dq", '"').replace("\\(lq", '"')
            .replace("\\(rq", '"').replace("\\e", "\\").replace("\\&", "").replace("\\ ", " "))


def macro_args(rest):
    """The arguments of a font macro line: words, or "quoted strings" (which may hold spaces)."""
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|\S+', rest)]


def man_items(path):
    """A man page as (kind, text): ("SH", title), ("TP", tag), ("nf", no-fill line), ("text", running text)."""
    with open(path) as f:
        src = f.read().splitlines()
    out, tag_next, nofill = [], False, False
    for line in src:
        if line.startswith('.\\"'):
            continue
        if line.startswith("."):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("TP", "TQ"):
                tag_next = True
                continue
            if macro in ("nf", "fi"):
                nofill = macro == "nf"
                continue
            if macro == "SH":
                out.append(("SH", unescape(" ".join(macro_args(rest)))))
                continue
            if macro in ("B", "I"):
                text = " ".join(macro_args(rest))
            elif macro in ("BR", "RB", "IR", "RI", "BI", "IB"):
                text = "".join(macro_args(rest))
            else:
                continue                    # .PP, .RS, .RE, .TH, .br: layout only
        else:
            text = line
        text = unescape(text)
        if tag_next:
            out.append(("TP", text))
            tag_next = False
        else:
            out.append(("nf" if nofill else "text", text))
    return out


def section(path, title):
    """The items of one .SH section."""
    items, inside = [], False
    for kind, text in man_items(path):
        if kind == "SH":
            inside = text == title
        elif inside:
            items.append((kind, text))
    assert items, "%s has no %s section" % (os.path.basename(path), title)
    return items


def flat(items):
    """The running text of items as one line."""
    return re.sub(r"\s+", " ", " ".join(t for k, t in items if k != "TP")).strip()
