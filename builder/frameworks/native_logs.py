"""TensorFlow's C++ start-up chatter kept off the terminal.

TensorFlow 2.21 logs through absl before absl is initialised, so `TF_CPP_MIN_LOG_LEVEL` does
not silence its oneDNN notice, its CPU-feature notice or the "NodeDef mentions attribute"
error every `tf.data` pipeline prints; none of them concerns the run (the oneDNN setting is a
recorded control). Where the level asks for quiet (Capsule sets 2 unless the user set it),
the process's stderr file descriptor is passed through a filter that drops exactly those
lines and forwards everything else unchanged; at exit it is restored and drained.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

CHATTER = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|I\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]"
    rb"|E\d{4} [\d:.]+ +\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute"
    rb"|To enable the following instructions: )"
)
_installed: list[bool] = []


def quiet_native_logs() -> None:
    """Filter fd 2 once per process, when TF_CPP_MIN_LOG_LEVEL is 1 or more."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    if _installed or not level.isdigit() or int(level) < 1:
        return
    _installed.append(True)
    sys.stderr.flush()
    original = os.dup(2)
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if not CHATTER.match(line):
                    os.write(original, line)

    thread = threading.Thread(target=pump, name="capsule-stderr", daemon=True)
    thread.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer here closes: the pump reads to its end
        thread.join(timeout=5)

    atexit.register(restore)
