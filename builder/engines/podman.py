"""Podman (Debian's `podman`), driven through its Docker-compatible API service.

Why the compatible service and not podman-py: the docker SDK already drives every call the
recipe needs, and the service answers them the same way, so Podman is this file. Differences:
the socket, the archive format it loads without the base's layers (an OCI layout), and GPUs
(Podman gives them through CDI, which Capsule does not set up yet).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from builder.engines import Job, Log
from builder.engines.docker import ApiEngine
from builder.errors import EngineMissing

if TYPE_CHECKING:
    from docker import APIClient

SOCKET = "unix:///run/podman/podman.sock"  # `podman system service` as root


class PodmanEngine(ApiEngine):
    name = "podman"
    label = "the Podman service"
    start_hint = (
        "start it with scripts/podman-up.sh or `podman system service --time=0 &` "
        "(CAPSULE_PODMAN_HOST names another socket)"
    )
    oci_load = True

    def _client(self) -> APIClient:
        from docker import APIClient

        return APIClient(base_url=os.environ.get("CAPSULE_PODMAN_HOST", SOCKET), timeout=600)

    def run(self, image_id: str, job: Job, log: Log) -> tuple[int, str]:
        if job.gpu:
            raise EngineMissing(
                "GPU containers under Podman need NVIDIA's CDI set-up, which Capsule does not "
                "drive yet; replay with --on docker or --on host for --device cuda"
            )
        return super().run(image_id, job, log)
