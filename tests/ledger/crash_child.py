"""Appends forever from several threads, printing each receipt once it is acknowledged.

Run by test_crash.py, which kills this process with SIGKILL at random moments.
Usage: python -m tests.ledger.crash_child DB_URL KEY_FILE ORIGIN
MEDLEDGER_FAULT may arm a named crash point (ledger/faults.py).
"""

from __future__ import annotations

import base64
import os
import sys
import threading
from pathlib import Path

from ledger.entry import commitment
from ledger.keys import load_or_create_signer
from ledger.log import Log, Submission
from ledger.store import make_engine


def main() -> None:
    url, key_file, origin = sys.argv[1:4]
    signer = load_or_create_signer(Path(key_file), origin)
    cp_file = Path(key_file).with_name("checkpoint")
    log = Log(make_engine(url), signer, origin=origin, checkpoint_file=cp_file)
    out_lock = threading.Lock()
    # Ready once the log is open, so the parent's random kill lands among appends however slow
    # the machine is to start a process.
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    def worker() -> None:
        while True:
            data = os.urandom(64)
            r = log.append(Submission("record", "hospital-a", commitment(os.urandom(32), data)))
            line = base64.b64encode(r.receipt.encode()).decode() + "\n"
            with out_lock:
                sys.stdout.write(line)
                sys.stdout.flush()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
