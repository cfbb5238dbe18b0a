# sys.exit("message"): Python prints the message and exits with 1.
import sys


def install():
    sys.exit("fatal: disk full")
