# Copyright: netstate.tcp contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stand-in for get-pip.py, saved where ansible-test looks for its cached copy.

ansible-test bootstraps pip in the virtualenvs it makes (created --without-pip) by downloading
get-pip.py from a host this project cannot reach. This installs pip with the arguments ansible-test
passes: through ensurepip when the Python has it, otherwise (Debian without python3-venv) by
running pip from the pip wheel in the directory pip's own configuration names as find-links
(/etc/pip.conf, as scripts/matrix.py writes it on a fleet host).
"""

import configparser
import glob
import importlib.util
import os
import subprocess
import sys


def pip_wheel():
    parser = configparser.ConfigParser()
    parser.read(["/etc/pip.conf", os.path.expanduser("~/.config/pip/pip.conf")])
    for directory in parser.get("global", "find-links", fallback="").split():
        wheels = sorted(glob.glob(os.path.join(directory, "pip-*-py3-none-any.whl")))
        if wheels:
            return wheels[-1]
    return None


def main():
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    if importlib.util.find_spec("ensurepip") is not None:
        subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + args)
        return
    wheel = pip_wheel()
    if wheel is None:
        sys.exit("get_pip stand-in: this Python has no ensurepip and no pip wheel is in pip's find-links")
    subprocess.check_call([sys.executable, os.path.join(wheel, "pip"), "install", "--quiet"] + args)


if __name__ == "__main__":
    main()
