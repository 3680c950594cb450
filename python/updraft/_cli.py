"""``python -m updraft._cli ARGS``: the ``updraft`` command line, run by the engine inside the
extension module (the package's launcher and workers run as this)."""

import sys

from updraft import _native


def main() -> None:
    sys.exit(_native.cli(["updraft", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
