# install() never ends.
import os
import time


def install():
    with open(os.path.join(os.environ["RUNNER_TEST_DIR"], "child.pid"), "w") as f:
        f.write(str(os.getpid()))
    print("sleeping", flush=True)
    time.sleep(60)
