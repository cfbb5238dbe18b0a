# install() returns but leaves a non-daemon thread running.
import threading
import time


def install():
    threading.Thread(target=time.sleep, args=(60,)).start()
    print("thread started")
