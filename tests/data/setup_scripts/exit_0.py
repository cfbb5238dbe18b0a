# sys.exit(0) in install(): a success, said oddly.
import sys


def install():
    print("done early")
    sys.exit(0)
