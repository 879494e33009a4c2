"""Say what `pip install` is about to download, from pip's own dry-run report.

Usage: install_plan.py REPORT.json. Standard library only (it runs before anything else is
installed). Sizes come from the local file or an HTTP HEAD of the download URL; a size that
cannot be had is left out of the sum and said so. Why: on a machine that reaches only PyPI,
`torch==2.13.0` is PyPI's CUDA build, gigabytes of nvidia-* wheels a user should hear about
before they download.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

CUDA_PREFIXES = ("nvidia-", "triton")


def size_of(url: str) -> int | None:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        return path.stat().st_size if path.is_file() else None
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=15) as response:
            length = response.headers.get("Content-Length")
            return int(length) if length else None
    except (OSError, ValueError):
        return None


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def main(report_path: str) -> None:
    items = [  # the project itself (a local directory) is not downloaded
        i
        for i in json.loads(Path(report_path).read_text()).get("install", [])
        if "dir_info" not in i.get("download_info", {})
    ]
    if not items:
        print("bootstrap: nothing new to download", file=sys.stderr)
        return
    names = [(i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in items]
    urls = [i.get("download_info", {}).get("url", "") for i in items]
    with ThreadPoolExecutor(16) as pool:
        sizes = list(pool.map(size_of, urls))
    known = sum(s for s in sizes if s)
    unknown = sum(1 for s in sizes if s is None)
    line = f"pip will install {len(items)} distributions, {gigabytes(known)} to download"
    line += f" ({unknown} of unknown size)" if unknown else ""
    print(f"bootstrap: {line}", file=sys.stderr)
    versions = dict(names)
    size = {n: s or 0 for (n, _), s in zip(names, sizes, strict=True)}
    torch = versions.get("torch")
    cuda = [n for n in size if n.startswith(CUDA_PREFIXES)]
    if torch and cuda:
        cuda_size = sum(size[n] for n in cuda) + size["torch"]
        print(
            f"bootstrap: torch {torch} is PyTorch's CUDA build here, with {len(cuda)} "
            f"nvidia-*/triton wheels: {gigabytes(cuda_size)} of the download, about 6 GB "
            "installed, and about 5 GB in each capsule image that carries it.\n"
            "bootstrap: for the CPU build (about 0.2 GB) where PyTorch's own index is "
            "reachable: make clean install TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu",
            file=sys.stderr,
        )
    elif torch:
        print(f"bootstrap: torch {torch} (no CUDA libraries to download)", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1])
