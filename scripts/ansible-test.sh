#!/usr/bin/env bash
# Runs ansible-test (sanity or units) offline on a copy of the collection at
# .build/ansible-test/ansible_collections/netstate/tcp, the layout ansible-test requires.
#
# ansible-test bootstraps pip in its virtualenvs with a script it downloads from a host
# this project cannot reach; the stand-in below (saved where ansible-test looks for its
# cached copy) runs ensurepip and then pip install with the arguments it is given.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
command=${1:?usage: ansible-test.sh sanity|units [ansible-test options]}
shift

venv_python=$here/.venv/bin/python
pip_version=$("$venv_python" - <<'PY'
import re, ansible_test, pathlib
source = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", source).group(1))
PY
)
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cat > "$cache" <<'PY'
# Stand-in for get-pip.py (written by netstate.tcp's scripts/ansible-test.sh):
# ensurepip, then pip install with the arguments ansible-test passes.
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + args)
PY

# Outside this git checkout: inside it, ansible-test would ask git and find the copy ignored.
tree=${NETSTATE_ANSIBLE_TEST_DIR:-/var/tmp/netstate-tcp-ansible-test}/ansible_collections/netstate/tcp
mkdir -p "$tree"
# Only what git tracks or would track (untracked but not ignored), as a release would hold.
git ls-files -z --cached --others --exclude-standard \
    | rsync -a --delete --from0 --files-from=- ./ "$tree"/
# rsync --files-from does not delete files gone from the list: start clean each time
( cd "$tree" && git -C "$here" ls-files --cached --others --exclude-standard | sort > /tmp/netstate-wanted.$$ \
  && find . -type f -printf '%P\n' | sort | comm -13 /tmp/netstate-wanted.$$ - | xargs -r rm -f; rm -f /tmp/netstate-wanted.$$ )

cd "$tree"
python_version=$("$venv_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
export PATH=$here/.venv/bin:$PATH
case "$command" in
    sanity)
        exec ansible-test sanity --venv --python "$python_version" --color no \
            "$@" ;;
    units)
        exec ansible-test units --venv --python "$python_version" --color no "$@" ;;
    *)
        echo "ansible-test.sh: unknown command $command (sanity or units)" >&2
        exit 2 ;;
esac
