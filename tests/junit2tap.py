#!/usr/bin/env python3
"""Turn pytest's JUnit XML into TAP: one line per test case, skips marked as SKIP."""
import sys
import xml.etree.ElementTree as ET


def main(path):
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        print("1..1")
        print("not ok 1 - pytest produced no report (%s): collection or interpreter error" % e)
        return
    cases = list(root.iter("testcase"))
    if not cases:
        print("1..1")
        print("not ok 1 - no test was collected")
        return
    print("1..%d" % len(cases))
    for i, c in enumerate(cases, 1):
        name = "%s::%s" % (c.get("classname", ""), c.get("name", ""))
        if c.find("skipped") is not None:
            msg = c.find("skipped").get("message", "")
            print("ok %d - %s # SKIP %s" % (i, name, msg.replace("\n", " ")))
        elif c.find("failure") is not None or c.find("error") is not None:
            print("not ok %d - %s" % (i, name))
        else:
            print("ok %d - %s" % (i, name))


if __name__ == "__main__":
    main(sys.argv[1])
