"""The storage initializer's entry point: `initialize.py SRC_URI DEST_DIR [SRC_URI DEST_DIR ...]`.

Downloads with KServe's own storage code (`kserve_storage.Storage.download_files`, the function
KServe's storage-initializer image calls), so the InferenceService's storageUri, the S3 settings
KServe injects and the files that land in /mnt/models are exactly what a cluster sees.
"""

import os
import sys

from kserve_storage import Storage


def main(argv: list[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print("usage: initialize.py SRC_URI DEST_DIR [SRC_URI DEST_DIR ...]", file=sys.stderr)
        return 2
    sources, destinations = argv[0::2], argv[1::2]
    for destination in destinations:
        os.makedirs(destination, exist_ok=True)
    try:
        Storage.download_files(sources, destinations)
    except Exception as exc:  # the message is the init container's termination message
        print(f"storage initialization failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
