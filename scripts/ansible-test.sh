#!/usr/bin/env bash
# Runs ansible-test (sanity or units) offline on a copy of the collection at
# $NETSTATE_ANSIBLE_TEST_DIR/ansible_collections/netstate/tcp, the layout ansible-test requires.
# NETSTATE_ANSIBLE_VENV picks the virtualenv whose ansible-test and Python run it (default .venv;
# scripts/matrix.py passes one per ansible-core version).
#
# ansible-test bootstraps pip in its virtualenvs with a script it downloads from a host
# this project cannot reach; the stand-in scripts/get_pip.py, saved where ansible-test looks
# for its cached copy, installs pip without it.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
command=${1:?usage: ansible-test.sh sanity|units [ansible-test options]}
shift

venv=${NETSTATE_ANSIBLE_VENV:-$here/.venv}
venv_python=$venv/bin/python
pip_version=$("$venv_python" - <<'PY'
import re, ansible_test, pathlib
source = (pathlib.Path(ansible_test.__file__).parent / "_internal/python_requirements.py").read_text()
print(re.search(r"pip='([0-9.]+)'", source).group(1))
PY
)
cache=~/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cp scripts/get_pip.py "$cache.$$" && mv -f "$cache.$$" "$cache"   # atomic: parallel runs read it

# Outside this git checkout: inside it, ansible-test would ask git and find the copy ignored.
tree=${NETSTATE_ANSIBLE_TEST_DIR:-/var/tmp/netstate-tcp-ansible-test}/ansible_collections/netstate/tcp
mkdir -p "$tree"
# Only what git tracks or would track (untracked but not ignored), as a release would hold.
git ls-files -z --cached --others --exclude-standard \
    | rsync -a --delete --from0 --files-from=- ./ "$tree"/
# rsync --files-from does not delete files gone from the list: start clean each time (files and links), except for
# ansible-test's own output (tests/output), which holds the virtualenv it delegates to and reuses.
( cd "$tree" && git -C "$here" ls-files --cached --others --exclude-standard | sort > /tmp/netstate-wanted.$$ \
  && find . -path ./tests/output -prune -o ! -type d -printf '%P\n' | sort | comm -13 /tmp/netstate-wanted.$$ - | xargs -r rm -f; rm -f /tmp/netstate-wanted.$$ )

cd "$tree"
python_version=$("$venv_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
export PATH=$venv/bin:$PATH
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
