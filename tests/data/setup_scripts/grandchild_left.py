# install() returns at once, leaving a grandchild that holds the output pipe open, in another
# process group of the same session.
import os
import subprocess
import sys


def install():
    grandchild = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], process_group=0
    )
    with open(os.path.join(os.environ["RUNNER_TEST_DIR"], "grandchild.pid"), "w") as f:
        f.write(str(grandchild.pid))
    print("left a grandchild behind")
