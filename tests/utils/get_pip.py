"""Offline stand-in for the ``get-pip.py`` that ansible-test would download.

ansible-test bootstraps pip into each sanity-test virtual environment with a ``get-pip.py``
fetched from a host that is not reachable here.  It first looks in its cache
(``~/.ansible/test/cache/get_pip_<version>.py``), where ``scripts/bootstrap`` puts this file.
It is run with pip's install arguments (e.g. ``pip==24.2 --no-setuptools --no-wheel``): bring
pip in from the interpreter's own ``ensurepip``, then let that pip install what was asked for.
"""

from __future__ import annotations

import subprocess
import sys

# get-pip.py options that ``pip install`` does not know.
GET_PIP_ONLY_OPTIONS = ("--no-setuptools", "--no-wheel")


def main() -> int:
    """Install pip with ensurepip, then run ``pip install`` with the remaining arguments."""
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY_OPTIONS]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([sys.executable, "-m", "ensurepip"], check=True, stdout=subprocess.DEVNULL)
    rc = subprocess.call(pip + ["install"] + args)
    # ensurepip also brings setuptools (Python < 3.12), which get-pip.py would have left out.
    if rc == 0 and "--no-setuptools" in sys.argv[1:]:
        rc = subprocess.call(pip + ["uninstall", "--yes", "--quiet", "setuptools"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
