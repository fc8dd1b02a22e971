#!/bin/sh
# make-probe.sh SRC DEST: copy SRC/lbrp_app to DEST with the temporary lag probe of
# probe_fn.py.txt (not part of lbrp): the controller then writes to $LAG_LOG the stacks
# of whatever holds its thread for over 10 ms. Run the bench with --app-src DEST.
set -e
rm -rf "$2"; mkdir -p "$2"; cp -r "$1/lbrp_app" "$2/"; rm -rf "$2/lbrp_app/__pycache__"
python3 - "$2/lbrp_app/app.py" "$(dirname "$0")/probe_fn.py.txt" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
old = "        hub.spawn(self._poll_loop)\n        return thread\n"
assert old in s
s = s.replace(old, "        hub.spawn(self._poll_loop)\n        _lag_probe()\n        return thread\n")
s += open(sys.argv[2]).read()
open(p, "w").write(s)
PY
