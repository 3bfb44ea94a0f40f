"""Debian's Python packages (python3-numpy, -matplotlib, -torch, -sentencepiece) are installed for
/usr/bin/python3. A script started by another python3 (a venv, conda, /usr/local) calls require():
it restarts itself under /usr/bin/python3 when that has the module, or says exactly what to run."""
import importlib.util
import os
import shlex
import subprocess
import sys

SYSTEM_PYTHON = "/usr/bin/python3"


def require(module, package):
    """Return if `module` imports here; else re-execute under SYSTEM_PYTHON or exit naming `package`."""
    if importlib.util.find_spec(module) is not None:
        return
    if os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON) and os.path.exists(SYSTEM_PYTHON) \
            and subprocess.run([SYSTEM_PYTHON, "-c", "import " + module], capture_output=True).returncode == 0:
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
    sys.exit("%s: the Python module %s is missing for %s: install Debian's %s (apt-get install %s, or "
             "make test-deps), then run: %s %s" % (os.path.basename(sys.argv[0]), module, sys.executable, package,
                                                  package, SYSTEM_PYTHON, shlex.join(sys.argv)))
