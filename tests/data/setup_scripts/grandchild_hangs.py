# install() starts a grandchild that inherits the output pipe, then both sleep.
import os
import subprocess
import sys
import time


def install():
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.path.join(os.environ["RUNNER_TEST_DIR"], "grandchild.pid"), "w") as f:
        f.write(str(grandchild.pid))
    time.sleep(60)
