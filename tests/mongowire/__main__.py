"""``python -m tests.mongowire --port 0``: serve on 127.0.0.1, print the port.

Test infrastructure only (see :mod:`tests.mongowire`). The first line of output is
the port; the server then runs until it gets SIGTERM or SIGINT, or until its
standard input closes when started with ``--stop-on-stdin-eof`` (so a parent that
dies takes it along).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from tests.mongowire.server import MongoWireServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mongowire")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--faults", help="a sclibFault 'set' command as JSON, applied at start"
    )
    parser.add_argument("--stop-on-stdin-eof", action="store_true")
    args = parser.parse_args(argv)
    server = MongoWireServer(args.port)
    if args.faults:
        server.schedule.configure({"sclibFault": "set", **json.loads(args.faults)})

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.stop_on_stdin_eof:

        def watch_stdin() -> None:
            sys.stdin.read()
            server.stop()

        threading.Thread(target=watch_stdin, daemon=True).start()
    print(server.port, flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
