"""Docker, driven through its HTTP API (the docker SDK's low-level client).

`ApiEngine` is the whole engine for anything that speaks Docker's API: Podman's
Docker-compatible service is the same class with another socket and load format (podman.py).
The docker SDK drives only the classic builder (no BuildKit), which is all the recipe needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.engines import ImageInfo, Job, Log, confinement
from builder.engines.recipe import (
    IMAGE_TREE,
    canonical_config,
    canonical_layer,
    debootstrap_rootfs,
    image_archive,
    local_base_tag,
    scratch_dir,
)
from builder.errors import BadInput, EngineMissing

if TYPE_CHECKING:
    from docker import APIClient

STEP = re.compile(r"^(?:\[\d+/\d+\] )?(?:Step|STEP) \d+/\d+ ?: ")  # Docker, Podman
STAGE_START = re.compile(STEP.pattern + "FROM ")
STEP_RESULT = re.compile(r"^-{2,3}> ([0-9a-f]{10,64})$")  # Docker "---> id", Podman "--> id"
IMAGE_ID = re.compile(r"sha256:[0-9a-f]{64}")


class ApiEngine:
    """An engine that speaks Docker's HTTP API."""

    name = "docker"
    label = "the Docker engine"
    start_hint = "start one with scripts/docker-up.sh or `dockerd &`"
    oci_load = False  # load the canonical image as an OCI layout rather than `docker save`'s
    builds = True
    missing_hint = ""

    def __init__(self) -> None:
        try:
            import docker  # noqa: F401
        except ImportError:
            raise EngineMissing(
                "the docker Python SDK is not installed (pip install docker)"
            ) from None
        self.check()

    def check(self) -> None:
        from docker.errors import DockerException

        try:
            self.api = self._client()
            self.api.ping()
        except DockerException as error:
            reason = str(error).splitlines()[0][:160]
            raise EngineMissing(
                f"{self.label} does not answer ({reason}); {self.start_hint}"
            ) from None

    def _client(self) -> APIClient:
        import docker

        return docker.from_env(timeout=600).api

    # ------------------------------------------------------------ images

    def has_image(self, ref: str) -> str | None:
        from docker.errors import ImageNotFound

        try:
            return str(self.api.inspect_image(ref)["Id"])
        except ImageNotFound:
            return None

    def inspect(self, ref: str) -> ImageInfo | None:
        from docker.errors import ImageNotFound

        try:
            found = self.api.inspect_image(ref)
        except ImageNotFound:
            return None
        labels = (found.get("Config") or {}).get("Labels") or {}
        return ImageInfo(str(found["Id"]), list(found["RootFS"]["Layers"]), dict(labels))

    def tag(self, image_id: str, tag: str) -> None:
        repository, _, version = tag.rpartition(":")
        self.api.tag(image_id, repository, version)

    def remove(self, image_id: str) -> None:
        from docker.errors import APIError

        with contextlib.suppress(APIError):  # still used by something: the engine keeps it
            self.api.remove_image(image_id, force=False, noprune=False)

    def stop(self, name: str) -> None:
        from docker.errors import APIError

        with contextlib.suppress(APIError):  # gone already
            self.api.remove_container(name, force=True)

    def save(self, image_id: str) -> Iterable[bytes]:
        return self.api.get_image(image_id)  # type: ignore[no-any-return]

    def load(self, data: Iterable[bytes]) -> None:
        """Load an archive, consuming the engine's reply so that its errors surface."""
        for message in self.api.load_image(data):
            if isinstance(message, dict) and message.get("error"):
                raise BadInput(f"{self.name} load failed: {message['error']}")

    def base(self, ref: str | None, log: Log) -> tuple[str, str]:
        if ref is not None:
            found = self.has_image(ref)
            if found is None:
                raise EngineMissing(
                    f"--base {ref}: not in {self.label} and there is no registry here to pull it "
                    f"from; `{self.name} load` it first, or leave --base out to use Capsule's "
                    "local base"
                )
            return ref, found
        tag = local_base_tag()
        found = self.has_image(tag)
        if found is not None:
            return tag, found
        import shutil

        if shutil.which("debootstrap") is None:
            raise EngineMissing(
                "debootstrap is not installed; it makes the local base image "
                "(apt-get install debootstrap), or pass --base IMAGE"
            )
        log(f"base: building {tag} with debootstrap (about a minute, once per engine)")
        with tempfile.TemporaryDirectory(prefix="capsule-base-") as tmp:
            try:
                rootfs, labels = debootstrap_rootfs(Path(tmp))
            except RuntimeError as error:
                raise EngineMissing(f"base: {error}") from None
            repository, _, version = tag.partition(":")
            reply = self.api.import_image(
                src=str(rootfs),
                repository=repository,
                tag=version,
                changes=[f"LABEL {k}={json.dumps(v)}" for k, v in sorted(labels.items())],
            )
            imported = IMAGE_ID.findall(str(reply))
        if imported:  # Podman's service leaves the import untagged: tag it here
            self.tag(imported[-1], tag)
        found = self.has_image(tag)
        if found is None:
            raise EngineMissing(f"base: importing {tag} into {self.label} failed")
        return tag, found

    # ------------------------------------------------------------ build

    def build(
        self,
        context: bytes,
        tag: str | None,
        labels: dict[str, str],
        base_ref: str,
        nocache: bool,
        log: Log,
    ) -> str:
        """The classic build, then the canonical image made from what it built (recipe.py);
        the build's own images (the install stage, the raw result) are removed afterwards."""
        raw, stages = self._build(context, labels, nocache, log)
        try:
            return self._canonicalize(raw, base_ref, tag, labels, log)
        finally:
            for image in [raw, *stages]:
                self.remove(image)

    def _build(
        self, context: bytes, labels: dict[str, str], nocache: bool, log: Log
    ) -> tuple[str, list[str]]:
        from docker.errors import APIError

        image_id, last_step, stages = None, None, []
        try:
            stream = self.api.build(
                fileobj=io.BytesIO(context),
                custom_context=True,
                labels=labels,
                nocache=nocache,
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
                network_mode="none",
            )
            for chunk in stream:
                if "error" in chunk:
                    raise BadInput(f"image build failed: {chunk['error'].strip()}")
                for line in chunk.get("stream", "").splitlines():
                    text = line.strip()
                    if STEP.match(text):
                        log(f"build: {text[:140]}")
                    if STAGE_START.match(text) and last_step:
                        stages.append(last_step)  # the previous stage ended there
                    elif found := STEP_RESULT.match(text):
                        last_step = found.group(1)
                if "aux" in chunk and "ID" in chunk["aux"]:
                    image_id = chunk["aux"]["ID"]
            if image_id is None:
                raise BadInput("image build finished without an image")
        except BaseException as error:
            # a failed or interrupted build leaves no stage behind, nor its last step's image
            for image in [*stages, *([last_step] if last_step else [])]:
                self.remove(image)
            if isinstance(error, APIError):
                raise BadInput(f"image build failed: {error.explanation or error}") from None
            raise
        return image_id, stages

    def _canonicalize(
        self, raw: str, base_ref: str, tag: str | None, labels: dict[str, str], log: Log
    ) -> str:
        """Write the capsule's layer from the raw image's IMAGE_TREE and load it with the
        canonical config: the same files and settings give the same image ID on any engine."""
        built: dict[str, Any] = self.api.inspect_image(raw)
        base: dict[str, Any] = self.api.inspect_image(base_ref)
        if len(built["RootFS"]["Layers"]) != len(base["RootFS"]["Layers"]) + 1:
            raise BadInput("build: the image should be its base plus one layer; it is not")
        log("build: writing the capsule's layer and config (canonical image)")
        container = self.api.create_container(raw, command=["/bin/true"])["Id"]
        try:
            with scratch_dir() as tmp:
                stream, _ = self.api.get_archive(container, IMAGE_TREE)
                layer, digest = canonical_layer(stream, Path(tmp))
                config = canonical_config(built, base, labels, digest)
                self.load(image_archive(config, layer, tag, self.oci_load))
        finally:
            self.api.remove_container(container, force=True)
        canonical = f"sha256:{hashlib.sha256(config).hexdigest()}"
        if self.has_image(canonical) is None:
            raise BadInput("build: the canonical image did not load")
        if tag is not None:
            self.tag(canonical, tag)
        return canonical

    # ------------------------------------------------------------ run

    def _host_config(self, job: Job) -> dict[str, Any]:
        from docker.types import DeviceRequest, Ulimit

        c = confinement()
        return self.api.create_host_config(  # type: ignore[no-any-return]
            binds={
                str(m.source.resolve()): {"bind": m.target, "mode": "rw" if m.writable else "ro"}
                for m in job.mounts
            },
            network_mode=c.network,
            security_opt=["no-new-privileges"] if c.no_new_privileges else None,
            cap_drop=["ALL"],
            cap_add=list(c.capabilities) or None,
            pids_limit=c.pids,
            mem_limit=c.memory_bytes(),
            read_only=c.read_only_root,
            tmpfs=c.tmpfs(),
            ulimits=[
                Ulimit(name="nofile", soft=c.open_files, hard=c.open_files),
                Ulimit(name="nproc", soft=c.processes, hard=c.processes),
            ],
            device_requests=[DeviceRequest(count=-1, capabilities=[["gpu"]])] if job.gpu else None,
        )

    @contextlib.contextmanager
    def _container(self, image_id: str, job: Job) -> Iterator[str]:
        from docker.errors import APIError

        try:
            created = self.api.create_container(
                image_id,
                entrypoint=job.argv[:1],
                command=job.argv[1:],
                environment=job.env,
                user=job.user,
                host_config=self._host_config(job),
                working_dir="/tmp",
                name=job.name,
            )
        except APIError as error:
            reason = error.explanation or str(error)
            raise EngineMissing(f"{self.label} refused the container: {reason}") from None
        try:
            yield created["Id"]
        finally:
            self.api.remove_container(created["Id"], force=True)

    def _start_error(self, message: str) -> EngineMissing:
        if "could not select device driver" in message or "nvidia" in message.lower():
            return EngineMissing(
                f"{self.label} has no NVIDIA runtime, so it cannot give the container a GPU "
                f"({message.strip()[:160]}); install nvidia-container-toolkit, or replay with "
                "--device cpu"
            )
        return EngineMissing(f"the container did not start: {message[:200]}")

    def run(self, image_id: str, job: Job, log: Log) -> tuple[int, str]:
        from docker.errors import APIError

        with self._container(image_id, job) as container:
            try:
                self.api.start(container)
            except APIError as error:
                raise self._start_error(str(error.explanation or error)) from None
            last = ""
            logs = self.api.logs(container, stream=True, follow=True, stdout=True, stderr=True)
            for raw in logs:
                for line in raw.decode(errors="replace").splitlines():
                    if line.strip():
                        last = line.strip()
                        log(line)
            code = self.api.wait(container)["StatusCode"]
        return int(code), last


class DockerEngine(ApiEngine):
    """Docker (Debian's docker.io): the daemon at DOCKER_HOST or /var/run/docker.sock."""
