"""Runs the PyKMIP 0.11 server for kmip/tests/client_pykmip_server.rs.

Usage: python run_server.py CONFIG_FILE LOG_FILE

The server is configured entirely by CONFIG_FILE (a [server] section, see
kmip/services/server/config.py) and logs to LOG_FILE. PyKMIP forks helper
processes (a multiprocessing manager and the policy monitor), so this launcher
puts them all in a new process group and kills that group as soon as its stdin
reaches end-of-file, or the server itself ends: the test holds the other end of
the pipe, so the server goes away when the test drops it, and also when the test
process dies.
"""

import os
import signal
import sys
import threading
import traceback


def _kill_group_on_eof(fd):
    try:
        while os.read(fd, 4096):
            pass
    finally:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    config_path, log_path = sys.argv[1], sys.argv[2]

    os.setpgrp()
    # Watch a duplicate of the pipe with raw reads, and give fd 0 /dev/null: the
    # forked helper processes close sys.stdin on start, which would deadlock on
    # the lock of a sys.stdin read in progress in this thread.
    pipe = os.dup(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    threading.Thread(target=_kill_group_on_eof, args=(pipe,), daemon=True).start()

    try:
        from kmip.services.server import server

        kmip_server = server.KmipServer(
            config_path=config_path,
            log_path=log_path,
            live_policies=False,
        )
        with kmip_server:
            print("serving", flush=True)
            kmip_server.serve()
    except BaseException:
        traceback.print_exc()
    finally:
        # However the server ends, take its helper processes with it.
        sys.stdout.flush()
        sys.stderr.flush()
        os.killpg(os.getpgrp(), signal.SIGKILL)


if __name__ == "__main__":
    main()
