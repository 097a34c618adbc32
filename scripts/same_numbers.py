"""Does a code change leave training exactly as it was? Record a run's numbers, change the code,
run it again, and compare: every event field that training computes must be equal to the bit
(losses, learning rates, clusters, OAE and CMLR statistics, mAP, ...); only wall-clock fields
(times, durations, throughput, pids, hosts) may differ.

    python scripts/same_numbers.py record RUN_FOLDER numbers.json   # before the change
    python scripts/same_numbers.py check RUN_FOLDER numbers.json    # after: exit 1 on any difference

Compare runs made on the same machine with the same command (the CPU model decides bf16, and the
thread count the summation order).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Fields that measure the clock or the machine, not the training.
CLOCK = {"time", "seconds", "images_per_s", "timings", "pid", "host", "run", "device", "data", "started",
         "provenance", "resumed"}
# The version of the events file format (the redesign made it 2): not a number training computes.
FORMAT = {"schema"}


# Events that report on training without being part of it (health warnings came later).
NOT_TRAINING = {"warning"}


def numbers(run_folder: str) -> list[dict]:
    events = []
    for line in Path(run_folder, "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") not in NOT_TRAINING:
            events.append({k: v for k, v in event.items() if k not in CLOCK | FORMAT})
    return events


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("record", "check"):
        print(__doc__)
        return 2
    command, run_folder, path = argv
    current = numbers(run_folder)
    if command == "record":
        Path(path).write_text(json.dumps(current, indent=1))
        print(f"recorded {len(current)} events of {run_folder} in {path}")
        return 0
    before = [{k: v for k, v in event.items() if k not in CLOCK | FORMAT} for event in json.loads(Path(path).read_text())]
    differences = []
    if len(before) != len(current):
        differences.append(f"{len(before)} events before, {len(current)} now")
    for index, (old, new) in enumerate(zip(before, current)):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key) and key in old:  # fields added since are reported, not failed
                differences.append(f"event {index} ({old.get('event')}): {key} was {old.get(key)!r}, now {new.get(key)!r}")
    added = sorted({k for old, new in zip(before, current) for k in new if k not in old})
    for line in differences[:20]:
        print(line)
    if added:
        print(f"fields new since the record (not compared): {', '.join(added)}")
    if differences:
        print(f"{len(differences)} differences")
        return 1
    print(f"identical: {len(current)} events, every training number equal to the bit")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
