"""Print passed/failed/skipped per test tier (tests/<tier>/...) for each JUnit XML file pytest wrote."""

from __future__ import annotations

import shutil
import sys
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path


def summarise(path: Path, failures: list[str] | None = None) -> dict[str, Counter]:
    """Counts per tier; the ids of failed or errored tests are appended to ``failures`` when it is given."""
    tiers: dict[str, Counter] = defaultdict(Counter)
    for case in ET.parse(path).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        tier = parts[1] if len(parts) > 1 and parts[0] == "tests" else parts[0] or "?"
        if case.find("failure") is not None or case.find("error") is not None:
            tiers[tier]["failed"] += 1
            if failures is not None:
                failures.append(f"{case.get('classname', '?')}::{case.get('name', '?')}")
        elif case.find("skipped") is not None:
            tiers[tier]["skipped"] += 1
        else:
            tiers[tier]["passed"] += 1
    return tiers


def main(paths: list[str]) -> int:
    for p in paths:
        path = Path(p)
        if not path.is_file():
            continue
        host = path.stem.removeprefix("results-")
        print(f"== {host}")
        total, failures = Counter(), []
        try:
            tiers = summarise(path, failures)
        except ET.ParseError as e:
            # pytest writes its report last: an empty or cut file means the run died before the end (killed, or
            # the disk was full). Say so, and go on to the next host.
            print(f"   no readable results ({e}): pytest did not finish writing {path.name}; "
                  f"free disk now: {shutil.disk_usage(path.parent).free / 2**30:.1f} GiB")
            continue
        for tier, c in sorted(tiers.items()):
            total.update(c)
            print(f"   {tier:<12} passed {c['passed']:>4}  failed {c['failed']:>3}  skipped {c['skipped']:>3}")
        print(f"   {'all':<12} passed {total['passed']:>4}  failed {total['failed']:>3}  skipped {total['skipped']:>3}")
        for f in failures[:30]:
            print(f"   FAILED {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
