# install() writes a marker file; uninstall() removes it.
from setuphelpers import *
import os

MARKER = os.path.join(os.environ.get("RUNNER_TEST_DIR", "/nonexistent"), "marker.txt")


def install():
    with open(MARKER, "w") as f:
        f.write("%s %s\n" % (control.package, control.version))
    print("marker written")


def uninstall():
    remove_file(MARKER)
    print("marker removed")
